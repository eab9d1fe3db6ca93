"""An ONNX detector behind one call: ``load_detector(path).detect(rgb) -> boxes, scores, classes``.

onnxruntime runs the model on the CPU (the detector a robot already runs is usually small); the
adapter chosen from the model's outputs (:mod:`fusion_ros.detection.adapters`) supplies the
preparation and decoding of the reference code, so the numbers are the detector's own.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from fusion_ros.detection.adapters import Adapter, Output, Postprocess, get_adapter
from fusion_ros.detection.boxes import Detections
from fusion_ros.detection.preprocess import Preprocess
from fusion_ros.errors import ConfigError, DependencyError, InputError

__all__ = ["Detector", "load_detector"]

_INPUT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def _session(path: Path, threads: int):
    try:
        import onnxruntime as ort
    except ImportError as err:  # pragma: no cover - pinned in requirements.txt
        raise DependencyError("detectors need onnxruntime (pip install onnxruntime)") from err
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # exporters often leave initializers among the inputs: harmless warnings
    if threads > 0:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own untyped errors for a bad file
        raise InputError(f"cannot load detector {path}: {err}") from None


def _input_size(shape: list, override: tuple[int, int] | None, default: tuple[int, int], path: Path) -> tuple[int, int]:
    """(h, w) of the network input: ``override`` if given, else the model's fixed size, else ``default``."""
    if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
        raise InputError(f"detector {path} takes a {shape} input; expected an NCHW image tensor (1, 3, H, W)")
    fixed = all(isinstance(d, int) and d > 0 for d in shape[2:])
    if override is not None:
        if fixed and tuple(shape[2:]) != tuple(override):
            raise ConfigError(f"detector {path} has a fixed {shape[3]}x{shape[2]} input; cannot run it at {override[1]}x{override[0]}")
        return (int(override[0]), int(override[1]))
    return (int(shape[2]), int(shape[3])) if fixed else default


class Detector:
    """One ONNX detector with its layout's preparation and decoding.

    Attributes:
        path: the model file.
        name: its file stem (the report's label).
        adapter: the output-layout decoder.
        preprocess: the input preparation in use (the adapter's, at the model's input size).
        postprocess: score threshold and NMS in use (the adapter's reference settings unless overridden).

    Args:
        path: ONNX file with one NCHW float input.
        format: output layout, ``auto`` (from the outputs' shapes) or an adapter name.
        input_size: ``(h, w)`` for a model whose input size is free (default 640x640).
        postprocess, preprocess: replace the adapter's reference settings (e.g. another score threshold).
        threads: onnxruntime intra-op threads (0: its default, all cores).
    """

    def __init__(
        self,
        path: str | Path,
        format: str = "auto",
        input_size: tuple[int, int] | None = None,
        postprocess: Postprocess | None = None,
        preprocess: Preprocess | None = None,
        threads: int = 0,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"detector file not found: {self.path}")
        self.name = self.path.stem
        self._session = _session(self.path, threads)
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise InputError(f"detector {self.path} has {len(inputs)} inputs; expected one image tensor")
        self._input = inputs[0].name
        if inputs[0].type not in _INPUT_TYPES:
            raise InputError(f"detector {self.path} takes {inputs[0].type}; expected tensor(float) or tensor(float16)")
        self._dtype = _INPUT_TYPES[inputs[0].type]
        shape = list(inputs[0].shape)
        # Concrete output shapes come from one run on a blank input: exporters often leave them symbolic.
        # A model with a free input size runs at 640x640 unless ``input_size`` says otherwise.
        probe_size = _input_size(shape, input_size, (640, 640), self.path)
        outputs = self._outputs(probe_size)
        self.adapter: Adapter = get_adapter(format, outputs, probe_size)
        prep = preprocess or type(self.adapter).preprocess
        self.preprocess = prep.with_size(probe_size)
        self.postprocess = postprocess or type(self.adapter).postprocess

    def _outputs(self, size: tuple[int, int]) -> list[Output]:
        blank = np.zeros((1, 3, *size), self._dtype)
        try:
            values = self._session.run(None, {self._input: blank})
        except Exception as err:
            raise InputError(f"detector {self.path} does not run on a 1x3x{size[0]}x{size[1]} input: {err}") from None
        return [Output(o.name, tuple(v.shape)) for o, v in zip(self._session.get_outputs(), values)]

    def describe(self) -> str:
        """``name (layout): preparation; selection`` for reports."""
        return f"`{self.name}` ({self.adapter.name}): {self.preprocess.describe()}; {self.postprocess.describe()}"

    def detect(self, image: np.ndarray, channels: str = "rgb") -> Detections:
        """Detections in ``image``'s pixels, sorted by score.

        Args:
            image: uint8 (H,W,3) colour or (H,W) grey (given to the detector as three equal channels).
            channels: ``"rgb"`` (this package's convention) or ``"bgr"`` (an OpenCV frame).
        """
        if channels not in ("rgb", "bgr"):
            raise ConfigError(f"channels must be 'rgb' or 'bgr', got {channels!r}")
        if channels == "bgr" and image.ndim == 3:
            image = image[..., ::-1]
        tensor, placement = self.preprocess.apply(image)
        raw = self._session.run(None, {self._input: tensor.astype(self._dtype, copy=False)})
        found = self.adapter.decode(raw, self.preprocess.size, self.postprocess)
        return replace(found, boxes=placement.to_image(found.boxes))


def load_detector(path: str | Path, format: str = "auto", input_size: tuple[int, int] | None = None, **kwargs) -> Detector:
    """Open an ONNX detector; ``format`` is a layout name of :data:`~fusion_ros.detection.adapters.FORMATS`."""
    return Detector(path, format=format, input_size=input_size, **kwargs)
