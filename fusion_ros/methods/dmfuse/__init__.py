"""DMFuse: diffusion-model features fused by criss-cross cross-attention (Qi, Zhang & Wang, CJIF 2024).

Paper: "DMFuse: Diffusion Model Guided Cross-Attention Learning for Infrared and Visible Image
Fusion", Chinese Journal of Information Fusion 1(3):226-242, 2024, doi:10.62762/CJIF.2024.655617.
Authors' code: github.com/Zhishe-Wang/DMFuse @ 6b763d6 (2025-01-09), which has no licence file
(all rights reserved by default); its U-Net derives from wgcban/ddpm-cd (MIT) and its attention
from Serge-weihao/CCNet-Pure-Pytorch (MIT). This package is a re-implementation: no code was copied.

Weights: the fusion head is ``models/model.model`` in the authors' repository (57 tensors, a torch
pickle whose storages are tagged ``cuda:0``); the diffusion U-Net is ``ddpm_gen.pth``, published by
the authors on Baidu Netdisk only. ``weights/manifest.toml`` ``[dmfuse]`` says where each goes.

Pipeline of one pair (the authors' ``test.py``):

1. IR and visible luminance in [0,1] → [-1,1], replicated to 3 channels, padded at the bottom and
   right to a multiple of 32 with white (the authors' ``copyMakeBorder(value=256)`` saturates to 255).
2. For each modality and t ∈ {5, 50, 100}: a noise level γ ~ U(√ᾱ[t-1], √ᾱ[t]) of the cosine
   schedule with 2000 steps, x_t = γ·x + √(1-γ²)·ε, one pass of the SR3 U-Net (quarter width:
   inner channel 32) conditioned on γ itself, keeping the decoder features fd[2, 5, 8, 11, 14]
   (the first res-block of each decoder level, full resolution first). Features of the three t
   are concatenated per level.
3. Fusion head (:class:`DMFuseHead`): per-level encoders with channel+spatial squeeze-excitation
   (``en3`` serves the two coarsest levels), one criss-cross cross-attention module (CAIM) shared
   by all levels, a multi-level decoder whose two 3×3 convs are reused at every level, tanh.
4. Crop back; negatives clamp to 0.

Deliberate differences from the authors' code (the maths is theirs; the parity tests in
``test/test_dmfuse.py`` hold it to 1e-4 of their outputs):

- Noise: the authors draw γ and ε from numpy's and torch's global generators, so every run differs.
  Here they come from a ``torch.Generator`` re-seeded with the ``seed`` option on every call
  (default 0): the same pair gives the same output, frame after frame, and the noise is drawn once
  per image size and reused. ``seed=-1`` draws fresh noise each call as the authors do. Tests
  inject explicit noise and levels.
- The CAIM never materialises the H·W·(H+W) energies (~10 GB of the authors' 11-13 GB peak at
  640×512): the joint softmax over a pixel's column and row is split into a column softmax and a
  row softmax recombined through their log-sum-exps (:func:`criss_cross_attention`), computed on
  CPU inference by PyTorch's fused attention kernel (queries and keys zero-padded to the value
  width) and otherwise in chunks of columns/rows. Results agree with the dense form to float rounding.
- The head's per-level encoder convolution is applied to each timestep's features as soon as its
  U-Net pass ends (conv over a concatenation = sum of convs over its parts), so the wide features
  of only one pass are alive; the sum order differs from the authors' by float rounding.
- On CPU the networks run in channels-last (NHWC) layout (``channels_last`` option): oneDNN's
  convolutions were measured faster that way on this project's 2-core machine.
- The U-Net stops after the last decoder block whose output is used (``ups.16``): ``ups.17``,
  ``ups.18`` and ``final_conv`` are still built (checkpoint keys, DDPM training) but not run for
  features. The single-head self-attention uses ``scaled_dot_product_attention``.
- No hard-coded ``.cuda()``; CUDA with FP16 runs the convolutions in half precision while noise
  levels, the noise embedding and the attention softmax stay in float32 (γ ≈ 0.99995 is 1.0 in FP16).
- The 6 U-Net passes of a pair run one by one on CPU (a batch of 6 was not faster there, and
  costs ~6× the activation memory) and as one batch on CUDA (``unet_batch`` option).
- Input quantisation: by default the [0,1] inputs are used as they are. ``authors_io=true``
  reproduces the authors' uint8 round trip exactly: inputs quantised to 8 bits and
  ``u8/255·2-1`` computed in float64, output ``clamp(0,255)·255`` rounded half-to-even and
  saturated to uint8 as ``cv2.imwrite`` does, so the fused PNG equals theirs.
- Colour: the authors read both images as grey and write grey. Here the method fuses luminance
  (``color_space = "luma"``) and the Fuser keeps the visible chroma (the paper's §4.3); grey in
  gives grey out.

Where the paper and the code differ (the code is followed, for checkpoint compatibility):

- Loss weights of the head training: the paper gives 1, 4 and 20, the code (``args_fusion.py``)
  uses SSIM 10, intensity 14, texture 16; ``fusion-ros train dmfuse`` defaults to the code's and
  exposes all three (see :mod:`fusion_ros.training.dmfuse`).
- The code's noise schedule is the 'train' cosine schedule with 2000 steps (the 3000-step 'val'
  schedule of ``config/ddpm.json`` is never used); noise levels are continuous γ, not integer t.
- The released head holds modules its forward never uses (``conv_in2..5``, ``conv_t2``, ``conv_t3``);
  they are kept so the file loads with ``strict=True``.

Deployment: ``runtime=openvino`` (or ``onnxruntime``, ``tensorrt``, ``auto``) runs the U-Net passes and the
head as ONNX graphs (:mod:`.backends`); ``fusion-ros export --method dmfuse`` writes them.

Layout: :mod:`.schedule` (noise schedule), :mod:`.unet` (SR3 U-Net), :mod:`.head` (fusion head, CAIM),
:mod:`.model` (noise + features + head), :mod:`.loaders` (checkpoints), :mod:`.backends` (ONNX),
:mod:`.method` (the registered adapter), :mod:`.testing` (tiny seeded models).
"""

from fusion_ros.methods.dmfuse.head import CAIM, DMFuseHead, criss_cross_attention
from fusion_ros.methods.dmfuse.loaders import (
    head_state_from_checkpoint,
    load_head,
    load_unet,
    split_checkpoint,
    unet_state_from_checkpoint,
)
from fusion_ros.methods.dmfuse.method import DMFuse, DMFuseOptions
from fusion_ros.methods.dmfuse.model import DMFuseModel
from fusion_ros.methods.dmfuse.schedule import (
    FEAT_SCALES,
    N_TIMESTEP,
    PAD_MULTIPLE,
    SCHEDULE_BUFFERS,
    TIMESTEPS,
    cosine_betas,
    schedule_buffers,
    sqrt_alphas_cumprod_prev,
)
from fusion_ros.methods.dmfuse.unet import CONFIGS, SR3UNet, UNetConfig

__all__ = [
    "CAIM",
    "CONFIGS",
    "DMFuse",
    "DMFuseHead",
    "DMFuseModel",
    "DMFuseOptions",
    "FEAT_SCALES",
    "N_TIMESTEP",
    "PAD_MULTIPLE",
    "SCHEDULE_BUFFERS",
    "SR3UNet",
    "TIMESTEPS",
    "UNetConfig",
    "cosine_betas",
    "criss_cross_attention",
    "head_state_from_checkpoint",
    "load_head",
    "load_unet",
    "schedule_buffers",
    "split_checkpoint",
    "sqrt_alphas_cumprod_prev",
    "unet_state_from_checkpoint",
]
