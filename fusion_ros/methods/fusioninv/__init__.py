"""FusionINV: visible-style infrared/visible fusion by Stable Diffusion inversion, with diffusers, offline.

Paper: Liang, Jiang, Ma, Wang, Liu, Ma, "FusionINV: A Diffusion-Based Approach for Multimodal Image
Fusion", IEEE TIP 2025 (ieeexplore 11114795). Authors' code: github.com/erfect2020/FusionINV @ 6950866
(Apache-2.0), a fork of Cross-Image Attention (garibida/cross-image-attention, MIT) using edit-friendly
DDPM inversion (Huberman-Spiegelglas et al., CVPR 2024, arXiv 2304.06140). Weights: Stable Diffusion
v1.5 (CreativeML OpenRAIL-M), optionally TAESD as a faster VAE (madebyollin/taesd, MIT). Written from
the paper and a reading of the authors' code; no code is copied.

The algorithm, as the authors' released code runs it:

1. Both images to RGB (thermal replicated to 3 channels), resized to a working size that is a multiple
   of 8 (authors: fixed 672×528), encoded with the VAE's latent *mode* × scaling factor.
2. Visible: edit-friendly DDPM inversion with the empty prompt, no CFG, η=1, N steps (100): every x_t is
   drawn independently from q(x_t|x_0) and the per-step noise map z_t that makes the DDPM step land on
   the next sample is solved for. The DDIM "direction" term √(1−ᾱ_prev−σ²)·ε̂ of each step is kept.
3. Infrared: the same inversion with the *same* forward noise, each step shifted by the visible
   direction × ``direction_step_size`` (−0.12) and the forward-noise part of its target × the same
   factor, so the infrared trajectory is pulled towards the visible one.
4. Denoise the batch [fusion, visible, infrared] from step ``skip_steps`` (10 of 100) with the stored
   noise maps; the fusion branch starts from the visible latent and uses the visible noise maps.
5. In the decoder self-attention of the two highest-resolution up blocks the fusion branch keeps its
   queries and takes the infrared branch's keys/values (early steps), then the visible branch's, then its
   own; its attention map is sharpened, A' = clip((A − mean)·c + mean, 0, 1) with c = ``contrast`` (1.1).
6. The authors' UNet applies a FreeU variant to every up block's input (first half of the channels ×1.2
   or ×1.4, FFT low-frequency box ×0.9 or ×0.2), during inversion and sampling; kept (option ``freeu``).

Deliberate deviations from the authors' code (outputs unchanged unless said):

- Layers are chosen by module name (``up_blocks.{n-2,n-1}.attentions.*.attn1``). The released code picks
  them by token count (64² / 32²), which never matches at its own 672×528 working size, so it injects
  nothing there; this module injects at every working size (the paper's intent).
- One UNet pass per step with batch 3. The released pipeline runs a "swap" and a "no-swap" pass, each
  doubled for classifier-free guidance; with all prompts empty the guidance term of the fusion row is
  swap_text − noswap_uncond = 0, so the result equals the single swapped pass (shown in the tests) at
  ≈¼ of the sampling work. The authors' scheme stays available (``scheme="authors"``) for that check.
- Visible and infrared inversions run as one batch-2 pass per step, and the ``skip_steps`` inversion
  steps whose noise maps the sampler never reads are not computed (their only used output, the
  infrared start latent x + s·n, needs no UNet call).
- Only the fusion branch is decoded (the authors decode all three), and it is resized back to the
  visible frame. The working size keeps the input's aspect (``long_side``, default 672).
- All step thresholds are counted on the authors' 100-step schedule and scaled with ``steps``.
- The K/V schedule uses the authors' step counter, which their step-end callback sets to the index of
  the step just finished: denoising step j sees k = max(j − 1, 0). Injection runs for 1 ≤ k < 90.
- Noise is drawn on the CPU from ``seed`` (default 1, as the authors' README) and shared by all pairs of a
  batch, so a pair's output does not depend on the device or on what else is in the batch.
- Unused parts of the release are left out: AdaIN (off in the released settings), Prompt-Mixing masks,
  the unused swap-guidance branch, the never-called null-text optimisation.

Modules, in the order of the algorithm: :mod:`.schedule` (working size, K/V schedule), :mod:`.attention`
(the attention edit), :mod:`.freeu`, :mod:`.pipeline` (steps 1-6), :mod:`.loading` (offline SD v1.5 /
TAESD loading), :mod:`.tiny` (the tiny random model of tests and ``random_init``), :mod:`.method` (the
registered ``fusioninv`` method). Importing the package needs neither diffusers nor transformers.
"""

from __future__ import annotations

from fusion_ros.methods.fusioninv.attention import FusionINVAttnProcessor, InjectionControl, injection_layer_names
from fusion_ros.methods.fusioninv.loading import SD_FOLDER, TAESD_FOLDER, load_pipeline, unavailable_reason
from fusion_ros.methods.fusioninv.method import FusionINV, FusionINVOptions
from fusion_ros.methods.fusioninv.pipeline import FusionINVOutput, FusionINVPipeline, Inversion
from fusion_ros.methods.fusioninv.schedule import InjectionSchedule, working_size
from fusion_ros.methods.fusioninv.tiny import tiny_components

__all__ = [
    "SD_FOLDER",
    "TAESD_FOLDER",
    "FusionINV",
    "FusionINVAttnProcessor",
    "FusionINVOptions",
    "FusionINVOutput",
    "FusionINVPipeline",
    "InjectionControl",
    "InjectionSchedule",
    "Inversion",
    "injection_layer_names",
    "load_pipeline",
    "tiny_components",
    "unavailable_reason",
    "working_size",
]
