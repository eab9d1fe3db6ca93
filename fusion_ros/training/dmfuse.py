"""``fusion-ros train dmfuse``: DMFuse stage 2, the fusion head trained on IR/visible pairs.

The diffusion U-Net (stage 1, or the authors' ``ddpm_gen.pth``) is frozen; each step draws fresh
noise levels and noise for the 6 U-Net passes (as the authors' training does), and only the head
(:class:`~fusion_ros.methods.dmfuse.DMFuseHead`) learns. Loss (the authors' ``loss.py``), on grey
images in [0,1] and the head's tanh output F:

- SSIM term: 1 - (w_ir·SSIM(ir,F) + w_vi·SSIM(vi,F)), w ∝ the mean Sobel magnitude |Gx|+|Gy| of
  each source over the batch; SSIM with an 11×11 Gaussian window (σ 1.5), zero padding,
  C1 = 0.01², C2 = 0.03².
- texture: L1(Sobel(F), max(Sobel(ir), Sobel(vi))).
- intensity: L1(F, max(ir, vi)).

Weights: the authors' code uses SSIM 10, intensity 14, texture 16 (``args_fusion.py``); the paper
states 1, 4 and 20. The code's values are the defaults (they produced the released head); all
three are options. Their other settings are also the defaults: Adam lr 1e-5, batch 4, 256×256,
4 epochs (the released file is named epoch 7, so they trained longer). They trained on TNO
patches resized to 256²; here each step takes aligned random crops of the pairs (upscaled first
when smaller), which is what their patch folder amounts to. An epoch's last, smaller batch is
used (their loop drops it).

Outputs in ``--out``: ``model.model`` (latest head, a plain state_dict pickle like the released
file), ``fuse_Epoch_{e}.model`` after each epoch (the authors' naming), ``train_state.pth``
(optimiser, epoch, step, for ``--resume``) and ``train_log.csv``.
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fusion_ros.errors import InputError
from fusion_ros.methods.dmfuse import CONFIGS, DMFuseHead, DMFuseModel, load_head, load_unet
from fusion_ros.training._common import (
    IMAGE_SUFFIXES, LossLog, add_run_arguments, load_at_least, optimise, random_crop_box, save_atomic, seeded_rng, shuffled_loader,
    start_run, summary,
)

TARGET = "dmfuse"
HELP = "DMFuse stage 2: train the fusion head on IR/visible pairs with the frozen diffusion U-Net"

HEAD_FILE = "model.model"
STATE_FILE = "train_state.pth"
LOG_FILE = "train_log.csv"
LOSS_TERMS = ("loss", "ssim", "texture", "intensity")


def list_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(ir, vi) files with the same name in ``folder/ir`` and ``folder/vi`` (the layout of ``../shared/data``)."""
    ir_dir, vi_dir = folder / "ir", folder / "vi"
    if not ir_dir.is_dir() or not vi_dir.is_dir():
        raise InputError(f"{folder} needs the sub-folders ir/ and vi/ with same-named images")
    vis = {p.name: p for p in vi_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    pairs = [(p, vis[p.name]) for p in sorted(ir_dir.iterdir()) if p.name in vis]
    if not pairs:
        raise InputError(f"no same-named image pairs in {ir_dir} and {vi_dir}")
    return pairs


class PairCrops(torch.utils.data.Dataset):
    """Aligned random ``size``² crops of grey IR/visible pairs, as (2,size,size) float32 in [0,1]."""

    def __init__(self, pairs: list[tuple[Path, Path]], size: int) -> None:
        self.pairs, self.size = pairs, size

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> torch.Tensor:
        ir_im, vi_im = (load_at_least(p, "L", self.size) for p in self.pairs[index])
        if ir_im.size != vi_im.size:
            vi_im = vi_im.resize(ir_im.size)
        arr = np.stack([np.asarray(ir_im), np.asarray(vi_im)]).astype(np.float32) / 255.0
        top, left = random_crop_box(arr.shape[1], arr.shape[2], self.size)
        return torch.from_numpy(np.ascontiguousarray(arr[:, top:top + self.size, left:left + self.size]))


#: Sobel kernels for Gx and Gy, as the authors' ``Sobelxy``.
_SOBEL = (((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0)), ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0)))


def sobel(x: torch.Tensor) -> torch.Tensor:
    """|Gx| + |Gy| of (B,1,H,W) with zero padding."""
    kernels = torch.tensor(_SOBEL, dtype=x.dtype, device=x.device).unsqueeze(1)  # (2,1,3,3)
    return F.conv2d(x, kernels, padding=1).abs().sum(dim=1, keepdim=True)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of (B,1,H,W) images in [0,1]: Gaussian window, zero padding, C1 = 0.01², C2 = 0.03²."""
    coords = torch.arange(window, dtype=a.dtype, device=a.device) - window // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :])[None, None]
    blur = lambda t: F.conv2d(t, kernel, padding=window // 2)  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.mean()


def fusion_loss(ir: torch.Tensor, vi: torch.Tensor, fused: torch.Tensor, w_ssim: float, w_intensity: float, w_texture: float) -> dict[str, torch.Tensor]:
    """The authors' head loss and its terms (``loss`` is the weighted total)."""
    g_ir, g_vi = sobel(ir), sobel(vi)
    m_ir, m_vi = g_ir.mean(), g_vi.mean()
    ssim_w = (m_ir * ssim(ir, fused) + m_vi * ssim(vi, fused)) / (m_ir + m_vi)
    texture = F.l1_loss(sobel(fused), torch.maximum(g_ir, g_vi))
    intensity = F.l1_loss(fused, torch.maximum(ir, vi))
    total = w_ssim * (1 - ssim_w) + w_texture * texture + w_intensity * intensity
    return {"loss": total, "ssim": ssim_w, "texture": texture, "intensity": intensity}


def head_checkpoint(head: DMFuseHead) -> OrderedDict[str, torch.Tensor]:
    """The head as the released file stores it: a plain ``OrderedDict`` state_dict, no prefix."""
    return OrderedDict((k, v.detach().cpu().clone()) for k, v in head.state_dict().items())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", type=Path, required=True, help="folder with ir/ and vi/ holding same-named image pairs")
    parser.add_argument("--unet", type=Path, required=True, help="the frozen diffusion U-Net: the authors' ddpm_gen.pth or a dmfuse-ddpm output")
    parser.add_argument("--out", type=Path, default=Path("runs/dmfuse"), help=f"output folder ({HEAD_FILE}, fuse_Epoch_N.model, {STATE_FILE}, {LOG_FILE})")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="quarter", help="U-Net size of --unet (quarter = the released model)")
    parser.add_argument("--init", type=Path, help="start the head from this checkpoint (e.g. the released model.model) instead of random")
    parser.add_argument("--resume", action="store_true", help=f"continue from --out/{HEAD_FILE} and {STATE_FILE}")
    parser.add_argument("--epochs", type=int, default=4, help="passes over the pairs (the authors' 4)")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per step (the authors' 4)")
    parser.add_argument("--size", type=int, default=256, help="crop size, a multiple of 32 (the authors' 256)")
    parser.add_argument("--lr", type=float, default=1e-5, help="Adam learning rate (the authors' 1e-5)")
    parser.add_argument("--w-ssim", type=float, default=10.0, help="weight of 1-SSIM (code: 10; paper: 1)")
    parser.add_argument("--w-intensity", type=float, default=14.0, help="weight of the intensity L1 (code: 14; paper: 4)")
    parser.add_argument("--w-texture", type=float, default=16.0, help="weight of the Sobel texture L1 (code: 16; paper: 20)")
    add_run_arguments(parser, seed=0, seed_help="seed of crops, noise levels and noise")


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    device = start_run(out, size=args.size, multiple=32, resume=args.resume, resume_files=(HEAD_FILE, STATE_FILE), device=args.device)
    cfg = CONFIGS[args.config]
    unet = load_unet(args.unet, cfg)
    start_epoch, step, state = 0, 0, None
    if args.resume:
        state = torch.load(out / STATE_FILE, map_location=device, weights_only=True)
        start_epoch, step = int(state["epoch"]), int(state["step"])
    with seeded_rng(args.seed + step, device):  # a resumed run draws afresh, not a replay of the first
        if args.resume:
            head = load_head(out / HEAD_FILE, cfg.feature_channels())
        elif args.init is not None:
            head = load_head(args.init, cfg.feature_channels())
        else:
            head = DMFuseHead(cfg.feature_channels())
        return _train(args, unet, head, state, start_epoch, step, device)


def _train(args: argparse.Namespace, unet: torch.nn.Module, head: DMFuseHead, state: dict | None, start_epoch: int, step: int,
           device: torch.device) -> int:
    """The head's loop from ``start_epoch`` (``state``: the resumed optimiser's, or None)."""
    from tqdm import tqdm

    out: Path = args.out
    model = DMFuseModel(unet, head.train().requires_grad_(True)).to(device)
    optimizer = torch.optim.Adam(head.parameters(), lr=args.lr)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    generator = torch.Generator(device=device).manual_seed(args.seed + step)  # noise: not a replay after --resume
    loader = shuffled_loader(
        PairCrops(list_pairs(args.pairs), args.size),
        batch_size=args.batch_size, workers=args.workers, device=device, seed=args.seed + step,
    )
    log = LossLog(out / LOG_FILE, LOSS_TERMS)
    weights = {"w_ssim": args.w_ssim, "w_intensity": args.w_intensity, "w_texture": args.w_texture}
    values: dict[str, float] | None = None
    with tqdm(total=args.epochs * len(loader), initial=start_epoch * len(loader), desc=TARGET, unit="step", dynamic_ncols=True) as bar:
        for epoch in range(start_epoch, args.epochs):
            for batch in loader:
                ir, vi = batch.to(device, non_blocking=True).unsqueeze(2).unbind(1)  # (B,1,S,S) each, [0,1]
                with torch.no_grad():
                    levels, noise = model.draw((ir.shape[0], args.size, args.size), generator, device)
                    feats_ir = model.features(ir * 2 - 1, levels[0], noise[0])
                    feats_vi = model.features(vi * 2 - 1, levels[1], noise[1])
                terms = fusion_loss(ir, vi, head(feats_ir, feats_vi), **weights)
                optimise(optimizer, terms["loss"])
                step += 1
                values = {k: float(v.detach()) for k, v in terms.items()}
                log.write(step, values)
                bar.set_postfix(loss=f"{values['loss']:.4f}", epoch=epoch)
                bar.update(1)
            checkpoint = head_checkpoint(head)
            save_atomic(checkpoint, out / f"fuse_Epoch_{epoch}.model")
            save_atomic(checkpoint, out / HEAD_FILE)
            save_atomic({"epoch": epoch + 1, "step": step, "optimizer": optimizer.state_dict()}, out / STATE_FILE)
    print(summary(out / HEAD_FILE, values["loss"] if values else None, step, "--epochs"))
    return 0
