"""Loading Stable Diffusion v1.5 (and TAESD) for FusionINV from local files only: a diffusers folder, or
one original (LDM/CompVis) single-file checkpoint beside the diffusers configs."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Literal

import torch

from fusion_ros.errors import MethodUnavailableError, WeightsError
from fusion_ros.methods.fusioninv.dependencies import INSTALL_HINT, hub_offline, missing_packages, require_diffusers
from fusion_ros.methods.fusioninv.pipeline import FusionINVPipeline

__all__ = ["SD_FOLDER", "TAESD_FOLDER", "load_pipeline", "unavailable_reason"]

#: Folder (under the weights dir) of Stable Diffusion v1.5 in diffusers layout, or of a single
#: ``.safetensors``/``.ckpt`` checkpoint beside the diffusers JSON configs and tokenizer files.
SD_FOLDER = "stable-diffusion-v1-5"
#: Folder of TAESD in diffusers layout (``AutoencoderTiny``).
TAESD_FOLDER = "taesd"


_TOKENIZER_SETS = (("tokenizer.json",), ("vocab.json", "merges.txt"))


def _component_missing(root: Path, weights: bool) -> list[str]:
    """Files of the diffusers folder ``root`` that are missing (weights only when ``weights``)."""
    need = ["scheduler/scheduler_config.json", "unet/config.json", "vae/config.json", "text_encoder/config.json"]
    if weights:
        need += ["unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                 "text_encoder/model.safetensors"]
    missing = [f for f in need if not (root / f).is_file()]
    if not any(all((root / "tokenizer" / f).is_file() for f in files) for files in _TOKENIZER_SETS):
        missing.append("tokenizer/vocab.json + tokenizer/merges.txt")
    return missing


def _single_file(root: Path) -> Path | None:
    """The single SD checkpoint in ``root`` (``*.safetensors`` or ``*.ckpt`` at its top level), if exactly
    one and the diffusers weights are incomplete: a full download of the SD v1.5 repository has both, and
    its diffusers folders are then the ones used."""
    found = sorted(p for p in root.glob("*") if p.suffix in (".safetensors", ".ckpt") and p.is_file()) if root.is_dir() else []
    return found[0] if len(found) == 1 and _component_missing(root, weights=True) else None


#: Key prefixes of the parts of an original (LDM/CompVis) SD v1.x checkpoint. Their tensors map one to
#: one onto the diffusers UNet / VAE / CLIP text model (the CLIP part may carry an extra position_ids buffer).
_LDM_PARTS = {"unet": ("model.diffusion_model.",), "vae": ("first_stage_model.", "vae."),
              "text_encoder": ("cond_stage_model.transformer.",)}


def _checkpoint_keys(path: Path) -> list[str]:
    """Tensor names of a single-file checkpoint, without reading its tensors where the format allows."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    obj: Any = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    return [k for k, v in obj.items() if isinstance(v, torch.Tensor)] if isinstance(obj, dict) else []


def _single_file_shortfall(keys: list[str], parts: dict[str, torch.nn.Module]) -> list[str]:
    """Parts the checkpoint has fewer tensors for than the model has: diffusers' ``from_single_file``
    loads with ``strict=False`` and would leave those weights at random initialisation without a word."""
    short = []
    for name, model in parts.items():
        have = sum(k.startswith(_LDM_PARTS[name]) for k in keys)
        need = len(model.state_dict())
        if have < need:
            short.append(f"{name} has {have} of {need} tensors (prefix {_LDM_PARTS[name][0]})")
    return short


def unavailable_reason(weights_dir: Path, vae: str = "sd") -> str | None:
    """Why FusionINV cannot be loaded from ``weights_dir``, naming the folder and missing files, or ``None``."""
    missing_pkgs = missing_packages()
    if missing_pkgs:
        return f"needs the Python package(s) {', '.join(missing_pkgs)} ({INSTALL_HINT})"
    root = weights_dir / SD_FOLDER
    single = _single_file(root)
    missing = _component_missing(root, weights=single is None)
    if single is not None and not (root / "model_index.json").is_file():
        missing.append("model_index.json")
    if missing:
        return (
            f"Stable Diffusion v1.5 not found in {root}/: missing {', '.join(missing)} (put the diffusers folder of "
            "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5 there, or one original .safetensors/.ckpt "
            "checkpoint beside its model_index.json, */config.json, scheduler/scheduler_config.json and tokenizer/ "
            "files; see weights/README.md)"
        )
    if vae == "taesd":
        tdir = weights_dir / TAESD_FOLDER
        tmiss = [f for f in ("config.json", "diffusion_pytorch_model.safetensors") if not (tdir / f).is_file()]
        if tmiss:
            return (f"TAESD not found in {tdir}/: missing {', '.join(tmiss)} "
                    "(diffusers files of https://huggingface.co/madebyollin/taesd)")
    return None


def load_pipeline(
    weights_dir: Path,
    *,
    device: torch.device,
    dtype: torch.dtype,
    vae: Literal["sd", "taesd"] = "sd",
    freeu: bool = True,
) -> FusionINVPipeline:
    """Load SD v1.5 (and TAESD for ``vae="taesd"``) from ``weights_dir`` without any network access.

    ``weights_dir/stable-diffusion-v1-5/`` is either a diffusers folder (unet, vae, text_encoder,
    tokenizer, scheduler; safetensors) or one ``.safetensors``/``.ckpt`` original checkpoint beside
    ``model_index.json`` and the same folders' JSON configs and tokenizer files.
    """
    reason = unavailable_reason(weights_dir, vae)
    if reason:
        raise MethodUnavailableError(f"method 'fusioninv' is unavailable: {reason}")
    diffusers = require_diffusers()
    import transformers
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    root = weights_dir / SD_FOLDER
    common = {"local_files_only": True, "torch_dtype": dtype}
    try:
        with hub_offline():
            single = _single_file(root)
            if single is None:
                unet = diffusers.UNet2DConditionModel.from_pretrained(root, subfolder="unet", use_safetensors=True, **common)
                sd_vae = (
                    diffusers.AutoencoderKL.from_pretrained(root, subfolder="vae", use_safetensors=True, **common)
                    if vae == "sd" else None
                )
                text_encoder = transformers.CLIPTextModel.from_pretrained(
                    root / "text_encoder", use_safetensors=True, local_files_only=True, dtype=dtype
                )
            else:
                # config=<local folder> keeps diffusers (0.42.1) off the hub: without it, it fetches the SD
                # v1.5 configs even with local_files_only, and original_config= still fetches the tokenizer.
                pipe = diffusers.StableDiffusionPipeline.from_single_file(
                    str(single), config=str(root), safety_checker=None, feature_extractor=None,
                    requires_safety_checker=False, **common,
                )
                unet, sd_vae, text_encoder = pipe.unet, pipe.vae, pipe.text_encoder
                short = _single_file_shortfall(
                    _checkpoint_keys(single), {"unet": unet, "vae": sd_vae, "text_encoder": text_encoder}
                )
                if short:
                    raise WeightsError(f"{single} is not a complete SD v1.x checkpoint: {'; '.join(short)}")
            tokenizer = transformers.CLIPTokenizer.from_pretrained(root / "tokenizer", local_files_only=True)
            scheduler = diffusers.DDIMScheduler.from_pretrained(root, subfolder="scheduler", local_files_only=True)
            chosen_vae = (
                diffusers.AutoencoderTiny.from_pretrained(weights_dir / TAESD_FOLDER, use_safetensors=True, **common)
                if vae == "taesd" else sd_vae
            )
    except WeightsError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, SingleFileComponentError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"cannot load Stable Diffusion v1.5 from {root}: {first}") from None
    unet.to(device)
    chosen_vae.to(device)
    text_encoder.to(device)
    pipeline = FusionINVPipeline.from_components(unet, chosen_vae, scheduler, tokenizer, text_encoder, freeu=freeu)
    del text_encoder
    return pipeline
