"""``fusion-ros train dmfuse-ddpm``: DMFuse stage 1, the diffusion U-Net trained as an SR3 DDPM.

The recipe is the one the authors' U-Net code comes with (wgcban/ddpm-cd, from SR3): cosine
schedule with 2000 steps; per batch one step t ~ U{1..2000} and per image a continuous noise
level γ ~ U(√ᾱ[t-1], √ᾱ[t]); x_t = γ·x + √(1-γ²)·ε; the U-Net, conditioned on γ, predicts ε with an
L2 loss (their ``MSELoss(reduction='sum')`` divided by b·c·h·w, i.e. the mean); Adam, lr 1e-5,
256×256 crops, up to 10⁶ steps. The paper trains on MS-COCO; the authors' data and batch size are
not published. Images are used in colour (as SR3) unless ``--grey``, which replicates the
luminance to 3 channels as the fusion does at inference.

Outputs in ``--out``, in the authors' formats so either code base can read them:
``ddpm_gen.pth`` (their ``GaussianDiffusion`` state: ``denoise_fn.*`` + 12 schedule buffers),
``ddpm_opt.pth`` (``{'epoch', 'iter', 'scheduler', 'optimizer'}``, for ``--resume``) and
``train_log.csv`` (step, loss).
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from fusion_ros.methods.dmfuse import (
    CONFIGS,
    DMFuseModel,
    N_TIMESTEP,
    SR3UNet,
    cosine_betas,
    load_unet,
    schedule_buffers,
    sqrt_alphas_cumprod_prev,
)
from fusion_ros.training._common import (
    LossLog, add_run_arguments, list_images, load_at_least, optimise, random_crop_box, save_atomic, seeded_rng, shuffled_loader,
    start_run, summary,
)

TARGET = "dmfuse-ddpm"
HELP = "DMFuse stage 1: train the diffusion U-Net (SR3 DDPM, cosine 2000 steps, L2 on noise) on natural images"

GEN_FILE = "ddpm_gen.pth"
OPT_FILE = "ddpm_opt.pth"
LOG_FILE = "train_log.csv"


class ImageCrops(torch.utils.data.Dataset):
    """Random ``size``² crops with random horizontal flips, as (3,size,size) float32 in [-1,1]."""

    def __init__(self, files: list[Path], size: int, grey: bool) -> None:
        self.files, self.size, self.grey = files, size, grey

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        im = load_at_least(self.files[index], "L" if self.grey else "RGB", self.size)
        arr = np.asarray(im, dtype=np.float32)
        arr = arr[..., None] if arr.ndim == 2 else arr
        top, left = random_crop_box(arr.shape[0], arr.shape[1], self.size)
        crop = torch.from_numpy(np.ascontiguousarray(arr[top:top + self.size, left:left + self.size])).permute(2, 0, 1)
        if torch.rand(()) < 0.5:
            crop = crop.flip(-1)
        crop = crop / 127.5 - 1.0
        return crop.expand(3, -1, -1).contiguous() if self.grey else crop


def endless(loader: torch.utils.data.DataLoader, epoch: int) -> Iterator[tuple[int, torch.Tensor]]:
    """(epoch, batch) forever, counting passes over the data from ``epoch``."""
    while True:
        for batch in loader:
            yield epoch, batch
        epoch += 1


def gaussian_diffusion_state(unet: SR3UNet) -> OrderedDict[str, torch.Tensor]:
    """The U-Net as the authors' ``GaussianDiffusion.state_dict()``: ``denoise_fn.*`` + schedule buffers."""
    state: OrderedDict[str, torch.Tensor] = OrderedDict(schedule_buffers(cosine_betas(N_TIMESTEP)))
    for key, value in unet.state_dict().items():
        state["denoise_fn." + key] = value.detach().cpu().clone()
    return state


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=Path, required=True, help="folder of training images, searched recursively (the paper: MS-COCO)")
    parser.add_argument("--out", type=Path, default=Path("runs/dmfuse-ddpm"), help=f"output folder ({GEN_FILE}, {OPT_FILE}, {LOG_FILE})")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="quarter", help="U-Net size (quarter = the released model)")
    parser.add_argument("--size", type=int, default=256, help="square crop size, a multiple of 16 (default 256)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per step (default 4)")
    parser.add_argument("--iters", type=int, default=1_000_000, help="total optimiser steps, counting resumed ones (the authors' n_iter 1e6)")
    parser.add_argument("--lr", type=float, default=1e-5, help="Adam learning rate (the authors' 1e-5)")
    parser.add_argument("--grey", action="store_true", help="grey images replicated to 3 channels (the fusion's input domain)")
    parser.add_argument("--save-every", type=int, default=10_000, help="checkpoint interval in steps (the authors' 1e4)")
    parser.add_argument("--resume", action="store_true", help=f"continue from --out/{GEN_FILE} and {OPT_FILE}")
    add_run_arguments(parser, seed=0, seed_help="seed of crops, noise levels and noise")


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    device = start_run(out, size=args.size, multiple=16, resume=args.resume, resume_files=(GEN_FILE, OPT_FILE), device=args.device)
    step, epoch, opt_state = 0, 0, None
    if args.resume:
        opt_state = torch.load(out / OPT_FILE, map_location=device, weights_only=True)
        step, epoch = int(opt_state["iter"]), int(opt_state["epoch"])
    with seeded_rng(args.seed + step, device):  # a resumed run draws afresh, not a replay of the first
        unet = load_unet(out / GEN_FILE, CONFIGS[args.config]).requires_grad_(True) if args.resume else SR3UNet(CONFIGS[args.config])
        return _train(args, unet.to(device), opt_state, step, epoch, device)


def _train(args: argparse.Namespace, unet: SR3UNet, opt_state: dict | None, step: int, epoch: int, device: torch.device) -> int:
    """The DDPM loop from ``step`` (``opt_state``: the resumed optimiser's, or None)."""
    from tqdm import tqdm

    out: Path = args.out
    optimizer = torch.optim.Adam(unet.parameters(), lr=args.lr)
    if opt_state is not None:
        optimizer.load_state_dict(opt_state["optimizer"])
    loader = shuffled_loader(
        ImageCrops(list_images(args.images), args.size, args.grey),
        batch_size=args.batch_size, workers=args.workers, device=device, seed=args.seed + step,
    )
    sqrt_ac = sqrt_alphas_cumprod_prev(cosine_betas(N_TIMESTEP))
    log = LossLog(out / LOG_FILE, ("loss",))
    unet.train()

    def save() -> None:
        save_atomic(gaussian_diffusion_state(unet), out / GEN_FILE)
        save_atomic({"epoch": epoch, "iter": step, "scheduler": None, "optimizer": optimizer.state_dict()}, out / OPT_FILE)

    batches = endless(loader, epoch)
    value: float | None = None
    with tqdm(total=args.iters, initial=step, desc=TARGET, unit="step", dynamic_ncols=True) as bar:
        while step < args.iters:
            epoch, x = next(batches)
            x = x.to(device, non_blocking=True)
            loss = ddpm_loss(unet, x, sqrt_ac)
            optimise(optimizer, loss)
            step += 1
            value = float(loss.detach())
            log.write(step, {"loss": value})
            bar.set_postfix(loss=f"{value:.4f}", epoch=epoch)
            bar.update(1)
            if step % args.save_every == 0:
                save()
    save()
    print(summary(out / GEN_FILE, value, step, "--iters"))
    return 0


def ddpm_loss(unet: SR3UNet, x: torch.Tensor, sqrt_ac: np.ndarray) -> torch.Tensor:
    """SR3's continuous-noise-level ε loss for one batch x (B,3,H,W) in [-1,1] (one t per batch, as the authors)."""
    batch = x.shape[0]
    t = int(torch.randint(1, len(sqrt_ac), ()).item())
    low, high = float(sqrt_ac[t - 1]), float(sqrt_ac[t])
    gamma = (low + (high - low) * torch.rand(batch, dtype=torch.float64)).float().to(x.device)
    noise = torch.randn_like(x)
    return F.mse_loss(unet(DMFuseModel.q_sample(x, gamma, noise), gamma), noise)
