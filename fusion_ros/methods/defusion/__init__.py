"""DeFusion: fusion from self-supervised decomposition (Liang, Jiang, Liu, Ma; ECCV 2022).

Paper: "Fusion from Decomposition: A Self-Supervised Decomposition Approach for Image Fusion", ECCV 2022.
Authors' code: https://github.com/erfect2020/DecompositionForFusion @ 9e7a09a (2023-09-14), MIT per its
README and ``LICENSE.md`` (its ResNeSt building blocks carry Hang Zhang's headers). Weights: one
checkpoint on the authors' Google Drive (see ``weights/manifest.toml``), under the same MIT terms.
No code was copied; this is a re-implementation from reading theirs.

This package re-implements the *test-time* network ``models/UCTestShareModelProCommon.py:UCTestSharedNetPro``
(7,874,473 parameters) with the exact released ``state_dict`` layout (676 keys, including the duplicated
aliases of the modules shared by the two inputs), so the authors' ``{'state_dict': …}`` checkpoint, a bare
state dict, or a ``.safetensors`` copy load with ``strict=True``. The network is a ResNeSt split-attention
encoder shared by both images ("upper" = infrared, "lower" = visible), a common encoder ("ensembler") on
both encodings, a common decoder and a unique decoder (shared by both inputs), 16→3 projection heads, and
``fusion_rule``, a 16→3 conv on the sum of the three decoder embeddings whose output is the fused image.

Deliberate deviations from the authors' code, none of which changes a single output bit (the parity test
compares with the authors' own outputs, see ``test/test_defusion.py``; like theirs, the last bits depend
on the thread count, because ATen's reductions and conv dispatch do):

* The shared encoder and the shared unique decoder run the two images as one batch of 2 at 1/2 to 1/8
  resolution (their full- and half-resolution ends run per image, which keeps the peak memory below the
  authors'); the split-attention MLP (``fc1``/``fc2``) still runs per image, because ATen routes a
  batch-1 1x1 conv on a 1x1 map to a different GEMM than a batch-2 one, which rounds differently.
* On x86 CPUs with oneDNN, conv+ReLU and conv+residual+ReLU run as oneDNN post-op fusions
  (``mkldnn._convolution_pointwise``), but only where ATen itself would have chosen oneDNN for the
  plain conv (1x1 convs go to ATen's GEMM path when single-threaded), so the kernel is the same one.
* The 3x3/2 max pool is computed as a separable max over strided views (max is exact in any order),
  the no-op nearest resize after each ×2 upsampling is skipped when sizes already match, the identity
  ``AvgPool2d(1)`` in a stride-1 ``avg_down`` shortcut is dropped, and the attention products are
  formed in place.
* :meth:`DeFusionNet.fuse` returns only the fused image and skips the three projection heads.
* The unused ``decoder_common_projection_layer`` is kept (its weights are in the checkpoint); at test
  time the common part goes through the *upper* projection, as in the authors' forward. Training
  (:mod:`fusion_ros.training.defusion`) uses the common projection, as the authors' training class does.

Inference as the authors ran it for infrared/visible (``test.py`` + ``data/visir_fusion_dataset.py``):
both images grey (PIL ``convert('L')``) replicated to 3 channels in [0,1], IR first, 16-pixel reflect
padding, forward, crop, ``clamp(0,1)``, and ``ToPILImage`` (``mul(255).byte()``, which truncates).

Colour: the authors' IR/visible path is grey in, grey-ish RGB out. The adapter here is a ``"luma"``
method by default: it feeds the visible luminance (grey, exactly like the authors' grey path) and the
thermal image, converts the 3-channel output to BT.601 luminance, and the Fuser keeps the visible chroma.
That keeps the paper's numbers meaningful (same input statistics as the published IR/VIS results) and
still gives a colour image. Feeding the RGB visible image instead (the network is RGB-native, trained on
colour COCO crops, and the author suggests it in their issue #8) pairs a colour image with a grey one,
which the published IR/VIS results never did; it is not offered. The option ``authors_preprocessing`` reproduces the authors' exact path
instead (PIL's fixed-point grey conversion, 8-bit quantised inputs, truncating uint8 output, and the raw
3-channel output as RGB) so a CLI PNG can be compared with the authors' ``*_recover.png``.

Speed: see ``docs/RESULTS.md`` (DeFusion, Deployment) and ``benchmarks/``. On CPU the option
``tune_malloc`` (default on) applies :func:`fusion_ros.runtime.tune_malloc`. Deployment: ``runtime=openvino``
(or ``onnxruntime``, ``tensorrt``, ``auto``) runs the exported ONNX graph (:mod:`.backends`); on CUDA,
``runtime=torchscript`` with the Fuser's fp16/bf16 precision.

Layout: :mod:`.network` (the modules), :mod:`.loaders` (checkpoints), :mod:`.pipeline` (the authors'
inference, TorchScript), :mod:`.backends` (ONNX), :mod:`.method` (the registered adapter), :mod:`.testing`
(tiny seeded networks).
"""

from __future__ import annotations

from fusion_ros.methods.defusion.loaders import checkpoint_filter_fn, load_defusion_state_dict
from fusion_ros.methods.defusion.method import DeFusion, DeFusionOptions
from fusion_ros.methods.defusion.network import CONFIGS, Bottleneck, DeFusionConfig, DeFusionNet, ResNestLayer, SplitAttentionConv2d
from fusion_ros.methods.defusion.pipeline import authors_grey, export_program, export_torchscript, run_pipeline

__all__ = [
    "CONFIGS",
    "Bottleneck",
    "DeFusion",
    "DeFusionConfig",
    "DeFusionNet",
    "DeFusionOptions",
    "ResNestLayer",
    "SplitAttentionConv2d",
    "authors_grey",
    "checkpoint_filter_fn",
    "export_program",
    "export_torchscript",
    "load_defusion_state_dict",
    "run_pipeline",
]
