"""``fusion-ros train defusion``: DeFusion's self-supervised CUD pretext task on natural images.

The recipe of the authors' ``selftrain.py``, ``data/self_mixpretrain_dataset.py``, ``loss/mix_fp_loss.py``
and ``option/train/SelfTrained_SDataset.yaml`` (erfect2020/DecompositionForFusion @ 9e7a09a), re-written:

Data (per sample): an RGB image in [0,1]; colour jitter with brightness, contrast and saturation factors
each ~U(0.1, 1) applied in random order (torchvision ``ColorJitter`` semantics, no hue); one
``RandomResizedCrop`` to ``image_size`` (scale 0.08–1, ratio 3/4–4/3, bilinear with antialiasing).

Masks ("common and unique decomposition"): keep probability p = 0.1 + U(0,1)/1.12; mask A is the product
of a 13x13 and a 26/27-cell Bernoulli(p) grid upsampled (nearest) to the crop, mask B likewise and
independently; pixels hidden in both are handed to A or B by a third grid drawn from the 13, 26/27 or
26/27-cell layout with probability 1/3 each, so every pixel is visible in at least one view; A and B are
swapped with probability 1/2. Each view is ``img * mask + n * (1 - mask)`` with n = |N(0,1)| clamped to
[0,1], drawn per pixel and channel.

Targets: common = (A∧B)·img, unique A = (A − A∧B)·img, unique B = (B − A∧B)·img, fusion = img.
Loss: per sample, L1(common) + L1(unique A) + L1(unique B) (+ fusion term), summed over the batch.
Until iteration 3,000 each prediction is multiplied by its mask; afterwards pred·α + pred·mask·(1−α) with
α = 0.15·(min(it, 7000)/7000)², and α ×0.1 after iteration 40,000. The fusion term L1(img, fusion)·β,
β = (min(it − 10000, 14000)/14000)², is on from iteration 17,000. ``--schedule-scale`` multiplies all
these iteration thresholds (the paper's are tuned to 50,000 COCO images at batch 4; a short run on a few
hundred images needs them scaled down to see every phase).

Optimisation: Adam (lr 1e-3, betas 0.9/0.999), MultiStepLR at epochs 10/20/30/40 with gamma 0.5, batch 4,
seed 1. The authors' loop runs epochs 0…50 inclusive, hence 51 epochs by default. Their data list is
50,000 random COCO train2017 images: ``--num-samples`` (default: all images, at most 50,000) sets the
samples per epoch, drawn from the folder (repeating images with fresh crops and masks when it has fewer).

Network: this trains :class:`~fusion_ros.methods.defusion.DeFusionNet`, i.e. the architecture of the
released checkpoint (``UCTestSharedNetPro``). The authors' own training class at HEAD has deeper common
decoder stages and a broken forward (their issues #2/#5), so the released weights were evidently trained
with the test class's layout; during training the common part is projected by
``decoder_common_projection_layer``, as in their training class.

Deviations: on ``--resume`` the iteration counter (annealing) and the LR scheduler continue where they
stopped (the authors restart the former at 0 and do not restore the latter). ``max_grad_norm`` in their
YAML is unused by their script and not applied here either.

Outputs in ``--out``: ``latest.pth`` after every epoch and ``{epoch}_models.pth`` every
``--save-every`` epochs, each ``{'state_dict', 'optimizers', 'schedulers', 'epoch', 'step'}`` like the
released file (the extra ``step`` is ignored by loaders), plus ``train_log.csv``.
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from fusion_ros.errors import ConfigError, InputError, WeightsError
from fusion_ros.methods.defusion import DeFusionNet, load_defusion_state_dict
from fusion_ros.training._common import LossLog, add_run_arguments, list_images, optimise, save_atomic, seeded_rng, summary
from fusion_ros.weights import read_checkpoint

__all__ = [
    "CUDConfig",
    "CUDDataset",
    "add_arguments",
    "color_jitter",
    "cud_loss",
    "cud_masks",
    "random_resized_crop",
    "run",
    "train",
]

TARGET = "defusion"
HELP = "DeFusion: self-supervised CUD pretext training on a folder of natural images (COCO in the paper)"

LOG_FILE = "train_log.csv"
LOSS_TERMS = ("total", "common", "upper", "lower", "fusion")


@dataclass(frozen=True)
class CUDConfig:
    """The training recipe; defaults are the authors' values (see the module docstring)."""

    image_size: int = 256
    batch_size: int = 4
    epochs: int = 51
    num_samples: int = 0  # 0: every image in the folder, at most max_samples
    max_samples: int = 50_000
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    lr_milestones: tuple[int, ...] = (10, 20, 30, 40)
    lr_gamma: float = 0.5
    jitter: tuple[float, float] = (0.1, 1.0)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    grid_coarse: tuple[int, ...] = (13,)
    grid_fine: tuple[int, ...] = (26, 27)
    mask_only_iters: int = 3000
    anneal_iters: int = 7000
    anneal_alpha: float = 0.15
    late_iters: int = 40000
    late_alpha_scale: float = 0.1
    fusion_start: int = 17000
    fusion_offset: int = 10000
    fusion_ramp: int = 14000
    seed: int = 1

    def scaled(self, factor: float) -> CUDConfig:
        """The same recipe with every iteration threshold multiplied by ``factor`` (short runs)."""
        if factor <= 0:
            raise ConfigError(f"schedule scale must be positive, got {factor}")
        keys = ("mask_only_iters", "anneal_iters", "late_iters", "fusion_start", "fusion_offset", "fusion_ramp")
        return replace(self, **{k: max(1, round(getattr(self, k) * factor)) for k in keys})


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def _grey(img: torch.Tensor) -> torch.Tensor:
    """torchvision's ``rgb_to_grayscale`` (0.2989, 0.587, 0.114) of a (3,H,W) image: (1,H,W)."""
    return (0.2989 * img[0] + 0.587 * img[1] + 0.114 * img[2]).unsqueeze(0)


def color_jitter(img: torch.Tensor, low: float, high: float, gen: torch.Generator | None = None) -> torch.Tensor:
    """torchvision ``ColorJitter(brightness=(low,high), contrast=(low,high), saturation=(low,high), hue=0)``
    on a (3,H,W) tensor in [0,1]: the three factors drawn first, then applied in a random order."""
    order = torch.randperm(4, generator=gen).tolist()
    factors = [float(torch.empty(1).uniform_(low, high, generator=gen)) for _ in range(3)]
    for i in order:
        if i == 0:
            img = (img * factors[0]).clamp(0, 1)
        elif i == 1:
            mean = _grey(img).mean()
            img = (factors[1] * img + (1 - factors[1]) * mean).clamp(0, 1)
        elif i == 2:
            img = (factors[2] * img + (1 - factors[2]) * _grey(img)).clamp(0, 1)
    return img


def random_resized_crop(
    img: torch.Tensor, size: int, scale: tuple[float, float], ratio: tuple[float, float], gen: torch.Generator | None = None
) -> torch.Tensor:
    """torchvision ``RandomResizedCrop(size)`` on a (C,H,W) tensor: a random area/aspect box (10 tries,
    else the central crop), resized bilinearly with antialiasing to (C, size, size)."""
    _, h, w = img.shape
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    box = None
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(scale[0], scale[1], generator=gen))
        aspect = math.exp(float(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=gen)))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
            box = (top, left, ch, cw)
            break
    if box is None:  # central crop with the aspect clamped into the ratio range
        in_ratio = w / h
        if in_ratio < ratio[0]:
            cw, ch = w, int(round(w / ratio[0]))
        elif in_ratio > ratio[1]:
            ch, cw = h, int(round(h * ratio[1]))
        else:
            cw, ch = w, h
        box = ((h - ch) // 2, (w - cw) // 2, ch, cw)
    top, left, ch, cw = box
    crop = img[:, top : top + ch, left : left + cw].unsqueeze(0)
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)


def _grid(n: int, p: float, size: int, gen: torch.Generator | None) -> torch.Tensor:
    """An n x n Bernoulli(p) grid upsampled (nearest) to (size, size)."""
    cells = torch.bernoulli(torch.full((1, 1, n, n), p), generator=gen)
    return F.interpolate(cells, size=(size, size), mode="nearest")[0, 0]


def cud_masks(size: int, cfg: CUDConfig, gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two (size, size) 0/1 masks whose union covers every pixel (the authors' grid recipe)."""
    g1 = cfg.grid_coarse[int(torch.randint(0, len(cfg.grid_coarse), (1,), generator=gen))]
    g2, g3 = (cfg.grid_fine[int(torch.randint(0, len(cfg.grid_fine), (1,), generator=gen))] for _ in range(2))
    p = 0.1 + float(torch.rand(1, generator=gen)) / 1.12
    a = _grid(g1, p, size, gen) * _grid(g2, p, size, gen)
    b = _grid(g1, p, size, gen) * _grid(g2, p, size, gen)
    pick = float(torch.rand(1, generator=gen))
    third = _grid(g1 if pick < 0.33 else g2 if pick < 0.66 else g3, p, size, gen)
    hidden = ((a == 0) & (b == 0)).float()
    a = a + third * hidden
    b = b + (1 - third) * hidden
    if float(torch.rand(1, generator=gen)) < 0.5:
        a, b = b, a
    return a, b


class CUDDataset(Dataset):
    """Samples of the CUD task: ``(view_a (3,S,S), view_b (3,S,S), target (8,S,S))``.

    ``target`` is ``cat(mask_a, mask_b, img, img)`` as in the authors' loader.

    Args:
        files: image files.
        cfg: the recipe.
        num_samples: samples per epoch; sample i reads ``files[order[i % len(files)]]``.
    """

    def __init__(self, files: list[Path], cfg: CUDConfig, num_samples: int) -> None:
        self.files = files
        self.cfg = cfg
        self.num_samples = num_samples
        order = list(range(len(files)))
        random.Random(cfg.seed).shuffle(order)
        self.order = order

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        path = self.files[self.order[index % len(self.files)]]
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        except OSError as err:
            raise InputError(f"cannot read training image {path}: {err}") from None
        img = torch.from_numpy(arr).permute(2, 0, 1).contiguous()  # (3, H, W)
        img = color_jitter(img, *cfg.jitter)
        img = random_resized_crop(img, cfg.image_size, cfg.crop_scale, cfg.crop_ratio)
        mask_a, mask_b = cud_masks(cfg.image_size, cfg)
        noise_a = torch.randn_like(img).abs().clamp(0, 1)
        noise_b = torch.randn_like(img).abs().clamp(0, 1)
        view_a = img * mask_a + noise_a * (1 - mask_a)
        view_b = img * mask_b + noise_b * (1 - mask_b)
        target = torch.cat([mask_a[None], mask_b[None], img, img])
        return view_a, view_b, target


# --------------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------------


def _l1_per_sample(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``nn.L1Loss()`` of each sample on its own: (B,)."""
    return (a - b).abs().flatten(1).mean(1)


def cud_loss(
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], target: torch.Tensor, step: int, cfg: CUDConfig
) -> dict[str, torch.Tensor]:
    """The authors' ``SelfTrainLoss`` at iteration ``step``.

    Returns:
        ``total`` (sum over the batch, the quantity to minimise) and the per-type terms averaged over
        the batch (``common``, ``upper``, ``lower``, ``fusion``), as the authors log them.
    """
    common, upper, lower, fusion = outputs
    mask_a, mask_b, img = target[:, 0:1], target[:, 1:2], target[:, 2:5]
    both = ((mask_a == 1) & (mask_b == 1)).float()
    only_a, only_b = (mask_a - both).abs(), (mask_b - both).abs()
    if step < cfg.mask_only_iters:
        pred_c, pred_u, pred_l = common * both, upper * only_a, lower * only_b
    else:
        alpha = cfg.anneal_alpha * (min(step, cfg.anneal_iters) / cfg.anneal_iters) ** 2
        if step > cfg.late_iters:
            alpha *= cfg.late_alpha_scale
        pred_c = common * alpha + common * both * (1 - alpha)
        pred_u = upper * alpha + upper * only_a * (1 - alpha)
        pred_l = lower * alpha + lower * only_b * (1 - alpha)
    lc = _l1_per_sample(pred_c, both * img)
    lu = _l1_per_sample(pred_u, only_a * img)
    ll = _l1_per_sample(pred_l, only_b * img)
    if step >= cfg.fusion_start:
        beta = (min(step - cfg.fusion_offset, cfg.fusion_ramp) / cfg.fusion_ramp) ** 2
        lf = _l1_per_sample(img, fusion) * beta
    else:
        lf = torch.zeros_like(lc)
    total = (lc + lu + ll + lf).sum()
    return {"total": total, "common": lc.mean(), "upper": lu.mean(), "lower": ll.mean(), "fusion": lf.mean()}


# --------------------------------------------------------------------------------------------------
# Loop
# --------------------------------------------------------------------------------------------------


def train(
    images: Path,
    out: Path,
    cfg: CUDConfig,
    *,
    device: torch.device,
    workers: int = 2,
    resume: Path | None = None,
    init_weights: Path | None = None,
    save_every: int = 1,
    max_steps: int = 0,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Run the CUD training; returns the logged per-step losses.

    Args:
        images: folder of natural images.
        out: output folder for checkpoints and the CSV log.
        cfg: the recipe.
        device: where to train.
        workers: DataLoader worker processes.
        resume: a checkpoint written by this trainer (or the authors') to continue from.
        init_weights: start from these weights (any format the method loads), fresh optimiser.
        save_every: also keep ``{epoch}_models.pth`` every this many epochs (0: only ``latest.pth``).
        max_steps: stop after this many optimiser steps in this call (0: run all epochs; tests).
        progress: show a tqdm bar on stderr.
    """
    files = list_images(images)
    num_samples = cfg.num_samples or min(len(files), cfg.max_samples)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = read_checkpoint(resume) if resume is not None else {}
    if not isinstance(ckpt, Mapping):
        raise WeightsError(f"--resume: {resume} holds a {type(ckpt).__name__}, not a checkpoint of this trainer")
    start_epoch = int(ckpt.get("epoch", -1)) + 1 if resume is not None else 0
    with seeded_rng(cfg.seed + start_epoch, device):  # a resumed run gets fresh crops and masks, not epoch 0's again
        model = DeFusionNet()
        if init_weights is not None:
            load_defusion_state_dict(model, init_weights)
        if resume is not None:
            load_defusion_state_dict(model, ckpt, str(resume))
        return _train(model.to(device).train(), CUDDataset(files, cfg, num_samples), out, cfg, ckpt, start_epoch, device=device,
                      workers=workers, save_every=save_every, max_steps=max_steps, progress=progress)


def _train(
    model: DeFusionNet,
    dataset: CUDDataset,
    out: Path,
    cfg: CUDConfig,
    ckpt: dict,
    start_epoch: int,
    *,
    device: torch.device,
    workers: int,
    save_every: int,
    max_steps: int,
    progress: bool,
) -> list[dict[str, float]]:
    """The CUD loop from ``start_epoch`` (``ckpt``: the resumed checkpoint, or empty); see :func:`train`."""
    from tqdm import tqdm

    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.lr_milestones), gamma=cfg.lr_gamma)
    steps_per_epoch = math.ceil(len(dataset) / cfg.batch_size)
    if "optimizers" in ckpt:
        optimizer.load_state_dict(ckpt["optimizers"])
    if "schedulers" in ckpt:
        scheduler.load_state_dict(ckpt["schedulers"])
    step = int(ckpt.get("step", start_epoch * steps_per_epoch))
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(cfg.seed + start_epoch),
    )
    log = LossLog(out / LOG_FILE, ("epoch", "lr") + LOSS_TERMS)
    history: list[dict[str, float]] = []
    done = 0
    for epoch in range(start_epoch, cfg.epochs):
        bar = tqdm(loader, desc=f"defusion epoch {epoch}", disable=not progress, dynamic_ncols=True, leave=False)
        for view_a, view_b, target in bar:
            view_a, view_b, target = view_a.to(device), view_b.to(device), target.to(device)
            losses = cud_loss(model.forward_train(view_a, view_b), target, step, cfg)
            optimise(optimizer, losses["total"])
            values = {k: float(v.detach()) for k, v in losses.items()}
            lr = scheduler.get_last_lr()[0]
            log.write(step, {"epoch": epoch, "lr": lr, **values})
            history.append({"step": step, **values})
            bar.set_postfix(loss=f"{values['total']:.4f}", lr=f"{lr:.1e}")
            step += 1
            done += 1
            if max_steps and done >= max_steps:
                break
        scheduler.step()
        checkpoint = {
            "state_dict": model.state_dict(),
            "optimizers": optimizer.state_dict(),
            "schedulers": scheduler.state_dict(),
            "epoch": epoch,
            "step": step,
        }
        save_atomic(checkpoint, out / "latest.pth")
        if save_every and epoch % save_every == 0:
            save_atomic(checkpoint, out / f"{epoch}_models.pth")
        if max_steps and done >= max_steps:
            break
    return history


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``fusion-ros train defusion``."""
    d = CUDConfig()
    parser.add_argument("--images", required=True, type=Path, help="folder of natural images (searched recursively)")
    parser.add_argument("--out", type=Path, default=Path("runs/defusion"), help="output folder (default runs/defusion)")
    parser.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs (default {d.epochs}: the authors' 0..50)")
    parser.add_argument("--num-samples", type=int, default=0, help="samples per epoch (default: all images, at most 50,000)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help=f"batch size (default {d.batch_size})")
    parser.add_argument("--image-size", type=int, default=d.image_size, help=f"crop size (default {d.image_size})")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr:g})")
    parser.add_argument("--lr-milestones", type=int, nargs="*", default=list(d.lr_milestones), help="epochs where the LR is multiplied by --lr-gamma")
    parser.add_argument("--lr-gamma", type=float, default=d.lr_gamma, help=f"LR decay factor (default {d.lr_gamma})")
    parser.add_argument("--schedule-scale", type=float, default=1.0, help="multiply the loss schedule's iteration thresholds (3k/7k/17k/40k)")
    add_run_arguments(parser, seed=d.seed, seed_help=f"random seed (default {d.seed})")
    parser.add_argument("--resume", type=Path, help="checkpoint to continue from (model, optimiser, scheduler, epoch, step)")
    parser.add_argument("--weights", type=Path, help="initial weights (e.g. the authors' checkpoint) with a fresh optimiser")
    parser.add_argument("--save-every", type=int, default=1, help="keep {epoch}_models.pth every N epochs (0: only latest.pth)")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``fusion-ros train defusion``."""
    from fusion_ros.device import resolve_device

    if args.epochs < 1 or args.batch_size < 1 or args.image_size < 32 or args.num_samples < 0:
        raise ConfigError("--epochs and --batch-size must be ≥ 1, --image-size ≥ 32, --num-samples ≥ 0")
    cfg = CUDConfig(
        image_size=args.image_size,
        batch_size=args.batch_size,
        epochs=args.epochs,
        num_samples=args.num_samples,
        lr=args.lr,
        lr_milestones=tuple(args.lr_milestones),
        lr_gamma=args.lr_gamma,
        seed=args.seed,
    ).scaled(args.schedule_scale)
    history = train(
        args.images,
        args.out,
        cfg,
        device=resolve_device(args.device),
        workers=args.workers,
        resume=args.resume,
        init_weights=args.weights,
        save_every=args.save_every,
    )
    last = history[-1] if history else None
    print(summary(args.out / "latest.pth", last["total"] if last else None, int(last["step"]) if last else 0, "--epochs"))
    return 0
