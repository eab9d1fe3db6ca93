"""A tiny random Stable-Diffusion-topology component set, built in code: the ``random_init`` model of
the ``fusioninv`` method and the tests' model (no download, about 2 MB, seconds per pair on a CPU)."""

from __future__ import annotations

from typing import Any

import torch

from fusion_ros.methods.fusioninv.dependencies import require_diffusers

__all__ = ["tiny_components"]


def tiny_components(seed: int = 0) -> dict[str, Any]:
    """A random SD-topology set (UNet 416 k, VAE 25 k, CLIP text 15 k parameters; ≈2 MB) built in code.

    Same block structure as SD v1.5 (4 levels, cross-attention up blocks 1-3, ×8 VAE), so the injected
    layer names, token counts per level and the whole pipeline run as with the real model.
    Returns ``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``. The same ``seed`` gives the
    same weights; the caller's global RNG state is left as it was.
    """
    diffusers = require_diffusers()
    import transformers

    with torch.random.fork_rng(devices=[]):  # default initialisers draw from the global RNG: seed a fork of it
        torch.manual_seed(seed)
        return _build(diffusers, transformers)


def _build(diffusers: Any, transformers: Any) -> dict[str, Any]:
    """The components, initialised from the (already seeded) global RNG."""
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(16, 16, 32, 32), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=16, norm_num_groups=8, attention_head_dim=4,
    )
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=2, vocab_size=64,
        max_position_embeddings=77, bos_token_id=52, eos_token_id=53, pad_token_id=53,
    ))
    vocab: dict[str, int] = {}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = transformers.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    scheduler = diffusers.DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )
    return {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(), "tokenizer": tokenizer,
            "scheduler": scheduler}
