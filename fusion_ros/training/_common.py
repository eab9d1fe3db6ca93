"""What the training recipes share: image folders, crops, run set-up, the optimiser step, checkpoints, logs.

Private (leading underscore): ``fusion-ros train`` offers every public module of
:mod:`fusion_ros.training` as a target, so this one stays out of that list.
"""

from __future__ import annotations

import argparse
import csv
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image

from fusion_ros.errors import ConfigError, InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted; an empty or missing folder is an error."""
    if not folder.is_dir():
        raise InputError(f"training image folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return files


def load_at_least(path: Path, mode: str, size: int) -> Image.Image:
    """The image in ``mode`` ("RGB"/"L"), upscaled (bicubic) when its short side is below ``size``."""
    with Image.open(path) as im:
        im = im.convert(mode)
    short = min(im.size)
    if short < size:
        scale = size / short
        im = im.resize((max(size, round(im.width * scale)), max(size, round(im.height * scale))), Image.BICUBIC)
    return im


def random_crop_box(height: int, width: int, size: int) -> tuple[int, int]:
    """Top-left corner of a random ``size``×``size`` box (torch RNG, so DataLoader workers differ)."""
    top = int(torch.randint(0, height - size + 1, ()).item())
    left = int(torch.randint(0, width - size + 1, ()).item())
    return top, left


def add_run_arguments(parser: argparse.ArgumentParser, *, seed: int, seed_help: str) -> None:
    """``--device``, ``--workers`` and ``--seed``, the same in every recipe but for the seed's default."""
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--workers", type=int, default=2, help="data loading processes (0 = in the main process)")
    parser.add_argument("--seed", type=int, default=seed, help=seed_help)


def start_run(out: Path, *, size: int, multiple: int, resume: bool, resume_files: tuple[str, ...], device: str) -> torch.device:
    """Check ``--size`` and, with ``--resume``, that ``out`` holds the files to continue from;
    create ``out``; return the resolved device. Done before any network is built, so a wrong
    argument fails at once."""
    from fusion_ros.device import resolve_device

    if size % multiple or size <= 0:
        raise ConfigError(f"--size must be a positive multiple of {multiple}, got {size}")
    resolved = resolve_device(device)
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        for name in resume_files:
            if not (out / name).is_file():
                raise ConfigError(f"--resume: {out / name} not found")
    return resolved


@contextmanager
def seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run a recipe's draws (weight init, in-process crops and masks, noise) from torch's RNG seeded
    with ``seed``, forked from the caller's and restored afterwards: a seeded run is reproducible
    and leaves the caller's RNG as it found it (PyTorch's initialisers take no generator)."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def shuffled_loader(dataset: torch.utils.data.Dataset, *, batch_size: int, workers: int, device: torch.device, seed: int) -> torch.utils.data.DataLoader:
    """A shuffling DataLoader whose own generator, seeded with ``seed``, draws the order and the
    worker processes' seeds (their crops); a resumed run passes seed + step so it does not replay
    the first run's draws."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=False, num_workers=workers,
        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed),
    )


def optimise(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimiser step on ``loss``."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def save_atomic(obj: object, path: Path) -> None:
    """``torch.save`` through a temporary file, so an interrupted run never leaves a torn checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def summary(checkpoint: Path, loss: float | None, step: int, limit: str) -> str:
    """The line a training command prints when it ends: where the result is and its last loss."""
    done = f"loss {loss:.4f} at step {step}" if loss is not None else f"nothing to do (already at {limit})"
    return f"{checkpoint}: {done}"


class LossLog:
    """Appends (step, columns…) rows to a CSV file, creating it with a header; numbers as ``%.6g``."""

    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        self.path, self.columns = path, columns
        if not path.exists():
            with path.open("w", newline="") as f:
                csv.writer(f).writerow(("step",) + columns)

    def write(self, step: int, values: dict[str, float]) -> None:
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([step] + [f"{values[c]:.6g}" for c in self.columns])
