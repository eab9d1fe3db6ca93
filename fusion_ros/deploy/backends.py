"""Execution backends of the network methods: which runtime runs an exported ONNX graph, and running it.

``torch`` is the exact path (the methods' own modules). The others run the method's ONNX graphs:

* ``onnxruntime``: ONNX Runtime's CPU execution provider, or its CUDA provider on a CUDA device.
* ``openvino``: OpenVINO's CPU plugin in fp32 (``INFERENCE_PRECISION_HINT=f32``: on CPUs with bf16 or
  AMX it would otherwise compute in bf16).
* ``tensorrt``: ONNX Runtime's TensorRT provider (fp16 when the method runs in fp16), with CUDA and CPU
  providers behind it for the nodes TensorRT does not take. Needs a CUDA device and an onnxruntime build
  with that provider (``onnxruntime-gpu``); it is selected and refused by tests, never measured here.
* ``auto``: on CUDA, TensorRT if present, else ONNX Runtime's CUDA provider, else torch; on CPU, the
  method's order of the CPU runtimes, else torch (DeFusion: OpenVINO, then ONNX Runtime; DMFuse: none,
  torch is the faster and lighter there; docs/RESULTS.md).

:func:`resolve_backend` decides from what is installed; a backend that cannot run raises
:class:`~fusion_ros.errors.DependencyError` (a missing package) or :class:`~fusion_ros.errors.ConfigError`
(a device it does not serve) with a message that says why and what would fix it.
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusion_ros.errors import ConfigError, DependencyError

__all__ = ["BACKENDS", "ONNX_BACKENDS", "OPENVINO_CONFIG", "ORT_RUN_CONFIG", "ORT_SESSION_CONFIG", "Installed", "OnnxRunner", "installed", "ort_providers", "ort_session_options", "resolve_backend"]

#: Values of the methods' ``runtime`` option that run ONNX graphs.
ONNX_BACKENDS = ("onnxruntime", "openvino", "tensorrt")
#: Every backend name, the exact path first.
BACKENDS = ("torch", *ONNX_BACKENDS, "auto")

_TRT = "TensorrtExecutionProvider"
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class Installed:
    """What this Python environment offers: ONNX Runtime's execution providers (empty: not installed)
    and whether OpenVINO imports. A value, so selection is testable without the hardware."""

    ort_providers: tuple[str, ...] = ()
    openvino: bool = False


def installed() -> Installed:
    """Probe the installed runtimes (imports onnxruntime; only checks that openvino is importable)."""
    providers: tuple[str, ...] = ()
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        providers = tuple(onnxruntime.get_available_providers())
    return Installed(providers, importlib.util.find_spec("openvino") is not None)


def resolve_backend(
    requested: str, device: torch.device, have: Installed | None = None, *, cpu_order: tuple[str, ...] = ("openvino", "onnxruntime")
) -> str:
    """The backend that runs for ``requested`` on ``device``: ``torch`` or one of :data:`ONNX_BACKENDS`.

    ``cpu_order``: what ``auto`` tries on a CPU, fastest first for the method's graphs (then torch).

    Raises:
        ConfigError: an unknown name, or a backend that does not serve this device type.
        DependencyError: the backend's package (or provider) is not installed.
    """
    if requested not in BACKENDS:
        raise ConfigError(f"unknown runtime {requested!r}; valid: {', '.join(BACKENDS)}")
    if requested == "torch":
        return "torch"
    have = installed() if have is None else have
    cuda = device.type == "cuda"
    if requested == "auto":
        if cuda:
            return "tensorrt" if _TRT in have.ort_providers else "onnxruntime" if _CUDA in have.ort_providers else "torch"
        present = {"openvino": have.openvino, "onnxruntime": _CPU in have.ort_providers}
        return next((b for b in cpu_order if present[b]), "torch")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"runtime {requested!r} runs on cpu or cuda devices, not {device.type}")
    if requested == "tensorrt":
        if not cuda:
            raise ConfigError("runtime 'tensorrt' needs a CUDA device (device:=cuda); on CPU use openvino or onnxruntime")
        if _TRT not in have.ort_providers:
            raise DependencyError(
                "runtime 'tensorrt' needs onnxruntime with the TensorrtExecutionProvider (onnxruntime-gpu and TensorRT); "
                f"this onnxruntime has: {', '.join(have.ort_providers) or 'none (not installed)'}"
            )
    elif requested == "onnxruntime":
        if not have.ort_providers:
            raise DependencyError("runtime 'onnxruntime' needs the onnxruntime package (pip install onnxruntime==1.31.1)")
        if cuda and _CUDA not in have.ort_providers:
            raise DependencyError(
                "runtime 'onnxruntime' on CUDA needs onnxruntime-gpu (this onnxruntime has no CUDAExecutionProvider); "
                "use device:=cpu or runtime torch"
            )
    elif requested == "openvino":
        if cuda:
            raise ConfigError("runtime 'openvino' runs on the CPU here (its GPU plugin is for Intel GPUs); use tensorrt or onnxruntime on CUDA")
        if not have.openvino:
            raise DependencyError("runtime 'openvino' needs the openvino package (pip install openvino==2026.4.1)")
    return requested


def ort_providers(backend: str, device: torch.device, *, fp16: bool = False) -> list[Any]:
    """ONNX Runtime providers (with options) for ``backend`` on ``device``, most preferred first."""
    index = device.index or 0
    if backend == "tensorrt":
        trt = {"device_id": index, "trt_fp16_enable": fp16, "trt_engine_cache_enable": True}
        return [(_TRT, trt), (_CUDA, {"device_id": index}), _CPU]
    if device.type == "cuda":
        return [(_CUDA, {"device_id": index}), _CPU]
    return [_CPU]


def ort_session_options(threads: int) -> Any:
    """ONNX Runtime session options for a robot computer: ``threads`` compute threads, and memory bounded
    by what the graph needs at once.

    * Priority-based execution order: the default order runs the unrolled attention chunks of DMFuse's
      head breadth-first (every chunk's energies alive together); this one follows the graph's node
      order, chunk after chunk. Peak RSS of DMFuse at 640×512: docs/RESULTS.md.
    * No memory pattern: the pattern pre-plans one block per input shape for all of a run's
      intermediates and keeps it; without it tensors are allocated from the arena as they are needed.
    * The memory arena stays (without it the heap fragments more), but is shrunk after every run
      (:data:`ORT_RUN_CONFIG`), so two graphs of one method (DMFuse's U-Net and head) do not each keep
      their peak for the process's lifetime.
    """
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_order = onnxruntime.ExecutionOrder.PRIORITY_BASED
    opts.enable_mem_pattern = False
    for key, value in ORT_SESSION_CONFIG.items():
        opts.add_session_config_entry(key, value)
    return opts


#: ONNX Runtime session config entries. Its worker threads do not spin-wait for work: with a core taken
#: by another process, spinning workers steal the time the busy one needs (docs/RESULTS.md, contention).
ORT_SESSION_CONFIG = {"session.intra_op.allow_spinning": "0"}
#: OpenVINO CPU plugin properties (the thread count is added per runner). fp32: on CPUs with bf16 or AMX it
#: would otherwise compute in bf16. Latency: one stream, one request at a time. No pinning: a thread pinned
#: to a core another process keeps busy cannot move to the free one.
OPENVINO_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": False}
#: ONNX Runtime run options: give the CPU arena's free memory back after each run (see :func:`ort_session_options`).
ORT_RUN_CONFIG = {"memory.enable_memory_arena_shrinkage": "cpu:0"}


def _onnx_inputs(path: Path) -> dict[str, tuple[int | str, ...]]:
    """The graph inputs of an ONNX file in order (initializers excluded): name → dims, each a size or
    the name of a dynamic axis."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    return {
        i.name: tuple(d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim)
        for i in graph.input
        if i.name not in weights
    }


Shapes = tuple[tuple[int, ...], ...]
Run = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


@dataclass
class OnnxRunner:
    """One ONNX graph compiled for one backend; call it with named torch tensors, get torch tensors back.

    Inputs go to the runtime as contiguous float32 host arrays and outputs come back on ``device``
    (a host round trip on CUDA: the ONNX path is for CPUs here; the CUDA providers are unmeasured).

    With ``static_shapes`` a graph with dynamic axes is compiled once per set of input shapes, with those
    axes fixed (OpenVINO: the model reshaped before compiling; ONNX Runtime: free-dimension overrides),
    and the last ``max_shapes`` compilations are kept. The runtimes then plan every shape, memory block
    and kernel for that size and fold the graph's shape arithmetic: DeFusion at 640x512 runs 15-22 %
    faster than in the dynamic compilation, with less memory in OpenVINO and more in ONNX Runtime
    (docs/RESULTS.md, Deployment). A new size costs one compilation (DeFusion at 640x512: OpenVINO
    ~1.7 s, ONNX Runtime ~0.4 s).

    Args:
        path: the ``.onnx`` file.
        backend: one of :data:`ONNX_BACKENDS` (already resolved).
        device: where outputs are returned.
        threads: compute threads (0: torch's current count, which the node sets from ``torch_threads``).
        fp16: let TensorRT build fp16 engines.
        static_shapes: compile per input shapes instead of once for all.
        max_shapes: compilations kept with ``static_shapes`` (least recently used dropped first).
    """

    path: Path
    backend: str
    device: torch.device
    threads: int = 0
    fp16: bool = False
    static_shapes: bool = False
    max_shapes: int = 4
    input_names: tuple[str, ...] = field(init=False)
    _inputs: dict[str, tuple[int | str, ...]] = field(init=False, repr=False)
    _compiled: OrderedDict[Shapes | None, Run] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_shapes < 1:
            raise ValueError(f"max_shapes must be at least 1, got {self.max_shapes}")
        self._inputs = _onnx_inputs(self.path)
        self.input_names = tuple(self._inputs)
        self._compiled = OrderedDict()
        if not self.static_shapes:
            self._compiled[None] = self._compile(None)

    @property
    def compiled_shapes(self) -> list[Shapes | None]:
        """The input shapes (in :attr:`input_names` order) compiled now, least recently used first;
        ``[None]`` for the one dynamic compilation."""
        return list(self._compiled)

    def _compile(self, shapes: Shapes | None) -> Run:
        """Compile the graph for ``shapes`` (``None``: as exported, dynamic axes left dynamic)."""
        threads = self.threads or torch.get_num_threads()
        if self.backend == "openvino":
            import openvino

            core = openvino.Core()
            model = core.read_model(str(self.path))
            if shapes is not None:
                # OpenVINO renames ports (e.g. after a leading Cast); its inputs keep the ONNX graph's order.
                model.reshape({port: list(shape) for port, shape in zip(model.inputs, shapes)})
            compiled = core.compile_model(model, "CPU", {**OPENVINO_CONFIG, "INFERENCE_NUM_THREADS": threads})
            request = compiled.create_infer_request()

            def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
                results = request.infer([feeds[n] for n in self.input_names])  # one inference, all outputs (copies)
                return [results[o] for o in compiled.outputs]

            return run
        import onnxruntime

        opts = ort_session_options(threads)
        for dims, shape in zip(self._inputs.values(), shapes or ()):
            for dim, size in zip(dims, shape):
                if isinstance(dim, str):
                    opts.add_free_dimension_override_by_name(dim, size)
        session = onnxruntime.InferenceSession(str(self.path), opts, providers=ort_providers(self.backend, self.device, fp16=self.fp16))
        run_options = onnxruntime.RunOptions()
        for key, value in ORT_RUN_CONFIG.items():
            run_options.add_run_config_entry(key, value)
        return lambda feeds: session.run(None, feeds, run_options)

    def _runner(self, feeds: dict[str, np.ndarray]) -> Run:
        """The compilation for these feeds' shapes, compiled now if it is not kept."""
        key = tuple(feeds[n].shape for n in self.input_names) if self.static_shapes else None
        if key in self._compiled:
            self._compiled.move_to_end(key)
        else:
            self._compiled[key] = self._compile(key)
            while len(self._compiled) > self.max_shapes:
                self._compiled.popitem(last=False)
        return self._compiled[key]

    def __call__(self, **inputs: torch.Tensor) -> list[torch.Tensor]:
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise ValueError(f"{self.path.name} needs inputs {sorted(missing)}")
        feeds = {n: np.ascontiguousarray(inputs[n].detach().to("cpu", torch.float32).numpy()) for n in self.input_names}
        return [torch.from_numpy(np.asarray(o)).to(self.device) for o in self._runner(feeds)(feeds)]
