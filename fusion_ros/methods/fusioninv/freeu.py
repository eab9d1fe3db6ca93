"""The authors' FreeU variant, applied to every UNet up block's input by forward pre-hooks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel

__all__ = ["fourier_box", "set_freeu"]


def fourier_box(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Scale the 2×2 lowest-frequency box of the centred 2-D spectrum (FFT in at least float32: half
    precision FFTs need power-of-two sizes on CUDA)."""
    freq = torch.fft.fftshift(torch.fft.fft2(x.to(torch.promote_types(x.dtype, torch.float32))), dim=(-2, -1))
    ch, cw = x.shape[-2] // 2, x.shape[-1] // 2
    freq[..., max(ch - 1, 0):ch + 1, max(cw - 1, 0):cw + 1] *= scale
    return torch.fft.ifft2(torch.fft.ifftshift(freq, dim=(-2, -1))).real.to(x.dtype)


def set_freeu(unet: UNet2DConditionModel, enabled: bool) -> None:
    """Install (or remove) forward pre-hooks reproducing the authors' FreeU variant on every up block's input.

    Inputs with the UNet's widest channel count (1280 in SD1.5) get their first half ×1.2 and the
    low-frequency box ×0.9; inputs with the second level's count (640) get ×1.4 and ×0.2. diffusers'
    ``enable_freeu`` differs (it filters the skip features), hence hooks.
    """
    widest = unet.config.block_out_channels[-1]
    second = unet.config.block_out_channels[1]

    def hook(_module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        x = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        c = x.shape[1]
        if c == widest:
            b, s = 1.2, 0.9
        elif c == second:
            b, s = 1.4, 0.2
        else:
            return args, kwargs
        x = torch.cat([x[:, : c // 2] * b, x[:, c // 2:]], dim=1)
        x = fourier_box(x, s)
        if "hidden_states" in kwargs:
            kwargs["hidden_states"] = x
        else:
            args = (x,) + tuple(args[1:])
        return args, kwargs

    for handle in getattr(unet, "_fusioninv_freeu_hooks", []):
        handle.remove()  # a UNet reused by a second pipeline gets the hooks once, not twice
    unet._fusioninv_freeu_hooks = (
        [blk.register_forward_pre_hook(hook, with_kwargs=True) for blk in unet.up_blocks] if enabled else []
    )
