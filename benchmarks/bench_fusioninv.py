"""FusionINV's cost per pair, for docs/RESULTS.md: the tiny random pipeline's wall time and UNet work for
this project's scheme and the authors', and a Stable Diffusion v1.5 estimate from timed passes of
randomly initialised full-size SD v1.5 parts (no weights needed).

Research tool, not installed with the package. Run from the repository root with the project's venv::

    python benchmarks/bench_fusioninv.py --no-full-size --repeats 3 --threads 1   # tiny pipeline
    python benchmarks/bench_fusioninv.py --no-tiny                                # SD v1.5 estimate

Prints the numbers as JSON on stdout; progress lines go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable

import torch

from fusion_ros.methods.fusioninv import FusionINVPipeline, tiny_components, working_size
from fusion_ros.methods.fusioninv.dependencies import require_diffusers


def _timed(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``fn`` in seconds over ``repeats`` calls (callers warm up on small inputs:
    the timed calls here take seconds to minutes, so a full-size warm-up call would double the run)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def benchmark(
    *,
    height: int = 528,
    width: int = 672,
    tiny_size: tuple[int, int] = (48, 64),
    repeats: int = 1,
    tiny: bool = True,
    full_size: bool = True,
    full_size_batches: tuple[int, ...] = (1, 2, 3),
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure FusionINV's cost per pair (for ``docs/RESULTS.md``).

    1. ``tiny``: the tiny random pipeline on a ``tiny_size`` pair (the test size; working size = input
       size), default settings (100 steps, skip 10): wall time per pair and UNet calls /
       image-evaluations, for this module's scheme and for the authors' (all inversion steps, one image
       per call; 2 passes × CFG doubling while sampling). The counts do not depend on the size.
    2. ``full_size``: one pass of a randomly initialised SD v1.5 UNet (architecture from its config; no
       weights needed) at the working latent size per batch size in ``full_size_batches``, with the
       FusionINV processors (infrared K/V + contrast on batches ≥ 3) and FreeU active; and a random SD
       v1.5 VAE encoding 2 images and decoding 1. Estimated SD v1.5 time per pair = Σ over the run's UNet
       calls of the measured time of a call of that batch size + VAE time. The authors' scheme needs
       batch 1 and 6 (6 is extrapolated as 2 × batch 3 unless measured) and decodes 3 images.

    ``log`` receives one line per finished phase. Returns the numbers (seconds, counts).
    """
    diffusers = require_diffusers()
    dev = torch.device(device)
    say = log or (lambda _msg: None)
    h, w = working_size(height, width, 0)
    lh, lw = h // 8, w // 8
    steps, skip = 100, 10
    result: dict[str, Any] = {
        "working_size": (h, w), "latent_size": (lh, lw), "torch_threads": torch.get_num_threads(), "device": str(dev),
    }
    parts = tiny_components(seed=0)
    for key in ("unet", "vae", "text_encoder"):
        parts[key].to(dev)
    if tiny:
        pipe = FusionINVPipeline.from_components(
            parts["unet"], parts["vae"], parts["scheduler"], parts["tokenizer"], parts["text_encoder"]
        )
        th, tw = tiny_size
        ir = torch.rand(1, 1, th, tw, generator=torch.Generator().manual_seed(0)).to(dev)
        vis = torch.rand(1, 3, th, tw, generator=torch.Generator().manual_seed(1)).to(dev)
        pipe(ir, vis, steps=10, skip_steps=1, long_side=0)  # warm-up
        result["tiny_size"] = (th, tw)
        for scheme in ("lean", "authors"):
            counts: dict[str, int] = {}

            def run(scheme: Any = scheme, counts: dict[str, int] = counts) -> None:
                out = pipe(ir, vis, steps=steps, skip_steps=skip, long_side=0, scheme=scheme)
                counts.update(calls=out.unet_calls, rows=out.unet_rows)

            result[f"tiny_{scheme}_s_per_pair"] = _timed(run, repeats)
            result[f"{scheme}_unet_calls"] = counts["calls"]
            result[f"{scheme}_unet_rows"] = counts["rows"]
            say(f"tiny {scheme}: {result[f'tiny_{scheme}_s_per_pair']:.1f} s/pair, {counts['calls']} UNet calls, {counts['rows']} rows")
    if not full_size:
        return result

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(**sd15_unet_config()).eval().to(dev)
    big = FusionINVPipeline(unet, parts["vae"], parts["scheduler"], torch.zeros(1, 77, 768))
    big.control.contrast, big.control.pairs = 1.1, 1
    big.scheduler.set_timesteps(steps)
    t = big.scheduler.timesteps[20]
    per_batch: dict[int, float] = {}
    with torch.inference_mode():
        big._eps(torch.randn(3, 4, 8, 8).to(dev), t)  # warm-up
        for b in full_size_batches:
            x = torch.randn(b, 4, lh, lw, generator=torch.Generator().manual_seed(b)).to(dev)
            big.control.source = "infrared" if b >= 3 else None
            per_batch[b] = _timed(lambda x=x: big._eps(x, t), repeats)
            say(f"SD v1.5 UNet, batch {b}, latent {lh}x{lw}: {per_batch[b]:.1f} s")
        big.control.source = None
        del big, unet
        sd_vae = diffusers.AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, norm_num_groups=32,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512,
        ).eval().to(dev)
        sd_vae.decode(sd_vae.encode(torch.zeros(1, 3, 64, 64).to(dev)).latent_dist.mode())  # warm-up
        img2 = (torch.rand(2, 3, h, w) * 2 - 1).to(dev)
        vae_encode = _timed(lambda: sd_vae.encode(img2).latent_dist.mode(), repeats)
        lat1 = torch.randn(1, 4, lh, lw).to(dev)
        vae_decode = _timed(lambda: sd_vae.decode(lat1), repeats)
        say(f"SD v1.5 VAE: encode 2 images {vae_encode:.1f} s, decode 1 image {vae_decode:.1f} s")
    result.update({f"sd15_unet_batch{b}_s": v for b, v in per_batch.items()})
    result.update(sd15_vae_encode2_s=vae_encode, sd15_vae_decode1_s=vae_decode)
    if {2, 3} <= set(per_batch):
        result["sd15_lean_estimate_s"] = (steps - skip) * (per_batch[2] + per_batch[3]) + vae_encode + vae_decode
    if {1, 3} <= set(per_batch):
        b6 = per_batch.get(6, 2 * per_batch[3])
        result["sd15_authors_estimate_s"] = 2 * steps * per_batch[1] + 2 * (steps - skip) * b6 + vae_encode + 3 * vae_decode
        result["sd15_authors_batch6_extrapolated"] = 6 not in per_batch
    return result


def sd15_unet_config() -> dict[str, Any]:
    """The SD v1.5 UNet architecture (from its published ``unet/config.json``), for random-weight timing."""
    return {
        "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
        "block_out_channels": (320, 640, 1280, 1280), "cross_attention_dim": 768, "attention_head_dim": 8,
        "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        "norm_num_groups": 32,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-tiny", dest="tiny", action="store_false", help="skip the tiny-pipeline timing")
    parser.add_argument("--no-full-size", dest="full_size", action="store_false", help="skip the SD v1.5 estimate")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per measurement (median reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument("--size", type=int, nargs=2, default=(528, 672), metavar=("H", "W"), help="SD v1.5 working size")
    parser.add_argument("--batches", type=int, nargs="+", default=(1, 2, 3), help="SD v1.5 UNet batch sizes to time")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    result = benchmark(
        height=args.size[0], width=args.size[1], repeats=args.repeats, tiny=args.tiny, full_size=args.full_size,
        full_size_batches=tuple(args.batches), device=args.device, log=lambda msg: print(msg, file=sys.stderr),
    )
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
