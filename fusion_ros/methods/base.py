"""The contract every fusion method implements, and the option metadata the node and CLI read.

A method sees only normalised, registered float tensors on its device: the :class:`~fusion_ros.fuser.Fuser`
does decoding, thermal normalisation, registration and colour handling once for all methods, so a
method file holds nothing but its own algorithm (and its network).
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

__all__ = ["FusionMethod", "NoOptions", "option"]


def option(
    default: Any,
    help: str,
    *,
    choices: tuple[Any, ...] | None = None,
    range: tuple[float, float] | None = None,
) -> Any:
    """Declare one method option: a dataclass field whose metadata the node turns into a
    ROS parameter descriptor and the CLI into ``--opt name=value`` help.

    Args:
        default: default value; its type (bool, int, float, str, list of floats) is the option's type.
        help: one-line description, shown in ``fusion-ros methods -v`` and the parameter descriptor.
        choices: allowed values for a string option.
        range: inclusive (low, high) for a number option.
    """
    meta = {"help": help, "choices": choices, "range": range}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class NoOptions:
    """Options of a method that has none."""


class FusionMethod(abc.ABC):
    """One fusion algorithm, built once for a device and dtype, then called per frame.

    Subclasses set the class attributes and implement :meth:`fuse`. They are registered with
    :func:`fusion_ros.registry.register_method`.
    """

    #: Registered name: the CLI ``--method`` and the ROS ``method`` parameter value.
    name: ClassVar[str]
    #: One line for ``fusion-ros methods``.
    description: ClassVar[str]
    #: Frozen dataclass of options built with :func:`option`.
    Options: ClassVar[type] = NoOptions
    #: ``"luma"``: ``fuse`` gets the visible BT.601 luminance (B,1,H,W) and returns fused luminance;
    #: the Fuser keeps the RGB chroma. ``"rgb"``: ``fuse`` gets (B,3,H,W) RGB and returns RGB.
    color_space: ClassVar[Literal["luma", "rgb"]] = "luma"
    #: Key of this method's entry in ``weights/manifest.toml``; ``None`` for weight-free methods.
    weights_key: ClassVar[str | None] = None
    #: Expected cost, shown in the methods table (e.g. "~3 ms / 640x512 pair on 2 CPU cores").
    cost: ClassVar[str] = ""
    #: Measured seconds per 640x512 pair on 2 CPU cores (fp32; docs/RESULTS.md), for the page's time
    #: estimate; ``None`` where it was not measured.
    seconds_per_pair: ClassVar[float | None] = None

    def __init__(
        self,
        options: Any,
        device: torch.device,
        dtype: torch.dtype,
        weights_dir: Path,
        *,
        random_init: bool = False,
    ) -> None:
        """Build the method on ``device``.

        Args:
            options: an instance of ``self.Options``.
            device: where tensors given to :meth:`fuse` live.
            dtype: compute dtype (float32, or float16/bfloat16 on CUDA).
            weights_dir: folder the manifest's relative file names are resolved against.
            random_init: build a network method with random weights (tests only; never chosen
                by the node, which checks availability first).
        """
        self.options = options
        self.device = device
        self.dtype = dtype
        self.weights_dir = weights_dir
        self.random_init = random_init

    @classmethod
    def unavailable_reason(cls, weights_dir: Path) -> str | None:
        """Why this method cannot run here, or ``None`` if it can.

        The default checks the manifest's files under ``weights_dir``; methods with optional
        Python dependencies extend it.
        """
        if cls.weights_key is None:
            return None
        from fusion_ros.weights import missing_weights_message

        return missing_weights_message(cls.weights_key, weights_dir)

    @abc.abstractmethod
    def fuse(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """Fuse one batch.

        Args:
            ir: (B,1,H,W) thermal in [0,1], registered to the visible frame, ``self.dtype`` on ``self.device``.
            vis: (B,1,H,W) luminance (``color_space == "luma"``) or (B,3,H,W) RGB, in [0,1].

        Returns:
            A tensor shaped like ``vis`` in [0,1] (values outside are clamped by the caller).
        """

    def warmup(self, height: int = 64, width: int = 64) -> None:
        """Run once on a small dummy pair so the first real frame does not pay for lazy init."""
        channels = 1 if self.color_space == "luma" else 3
        ir = torch.zeros(1, 1, height, width, device=self.device, dtype=self.dtype)
        vis = torch.zeros(1, channels, height, width, device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            self.fuse(ir, vis)

    @classmethod
    def option_fields(cls) -> tuple[dataclasses.Field, ...]:
        """The declared options, in declaration order."""
        return dataclasses.fields(cls.Options)
