"""Execution backends of the network methods (``runtime`` option): selection and refusal, parity of
ONNX Runtime and OpenVINO with the exact torch path, and the option as a live node parameter.

Parity bound: ``max|out - ref| <= REL_TOL * max|ref|`` per output. The runtimes compute the same fp32
graph with their own kernels, whose sums run in other orders: observed 3e-6 to 6e-6 of the peak on
tiny and golden weights; REL_TOL leaves headroom for other CPUs' kernels (the golden fixtures' README
suggests 1e-4 of the peak for an independent implementation too).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fusion_ros.deploy.backends import BACKENDS, Installed, OnnxRunner, installed, ort_providers, resolve_backend
from fusion_ros.errors import ConfigError, DependencyError
from fusion_ros.methods.defusion import DeFusion, DeFusionNet, load_defusion_state_dict, run_pipeline
from fusion_ros.methods.defusion.backends import OnnxFuse, export_form, export_fuse_graph
from fusion_ros.methods.defusion.testing import tiny_net
from fusion_ros.methods.dmfuse import CONFIGS, DMFuseHead, DMFuseModel, TIMESTEPS, load_head, load_unet
from fusion_ros.methods.dmfuse.backends import export_head_graph, export_unet_graph
from fusion_ros.methods.dmfuse.testing import tiny_method
from fusion_ros.options import build_options

REL_TOL = 1e-4
ONNX_RUNTIMES = ("onnxruntime", "openvino")
CPU, CUDA = torch.device("cpu"), torch.device("cuda", 1)
NOTHING = Installed()
EVERYTHING_GPU = Installed(("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"), True)
CPU_ONLY = Installed(("CPUExecutionProvider",), True)


def _rel_err(out: torch.Tensor | np.ndarray, ref: torch.Tensor | np.ndarray) -> float:
    out, ref = np.asarray(out, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert out.shape == ref.shape
    return float(np.abs(out - ref).max() / np.abs(ref).max())


@pytest.fixture
def onnx_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Exported graphs go to a fresh folder per test (no state shared through ~/.cache)."""
    monkeypatch.setenv("FUSION_ROS_ONNX_CACHE", str(tmp_path / "onnx"))
    return tmp_path / "onnx"


# ---------------------------------------------------------------------------------------- selection


@pytest.mark.parametrize(
    ("requested", "device", "have", "expected"),
    [
        ("torch", CPU, NOTHING, "torch"),
        ("torch", CUDA, NOTHING, "torch"),
        ("auto", CPU, CPU_ONLY, "openvino"),
        ("auto", CPU, Installed(("CPUExecutionProvider",), False), "onnxruntime"),
        ("auto", CPU, NOTHING, "torch"),
        ("auto", CUDA, EVERYTHING_GPU, "tensorrt"),
        ("auto", CUDA, Installed(("CUDAExecutionProvider", "CPUExecutionProvider"), True), "onnxruntime"),
        ("auto", CUDA, CPU_ONLY, "torch"),
        ("tensorrt", CUDA, EVERYTHING_GPU, "tensorrt"),
        ("onnxruntime", CUDA, EVERYTHING_GPU, "onnxruntime"),
        ("onnxruntime", CPU, CPU_ONLY, "onnxruntime"),
        ("openvino", CPU, CPU_ONLY, "openvino"),
    ],
)
def test_backend_selection(requested: str, device: torch.device, have: Installed, expected: str) -> None:
    assert resolve_backend(requested, device, have) == expected


def test_auto_follows_the_methods_cpu_order(tmp_path: Path) -> None:
    assert resolve_backend("auto", CPU, CPU_ONLY, cpu_order=("onnxruntime", "openvino")) == "onnxruntime"
    assert resolve_backend("auto", CPU, Installed((), True), cpu_order=("onnxruntime", "openvino")) == "openvino"
    assert resolve_backend("auto", CPU, CPU_ONLY, cpu_order=()) == "torch"
    assert tiny_method(tmp_path, runtime="auto").backend == "torch"  # DMFuse on a CPU: torch (docs/RESULTS.md)


@pytest.mark.parametrize(
    ("requested", "device", "have", "error", "says"),
    [
        ("tensorrt", CPU, EVERYTHING_GPU, ConfigError, "needs a CUDA device"),
        ("tensorrt", CUDA, Installed(("CUDAExecutionProvider", "CPUExecutionProvider")), DependencyError, "TensorrtExecutionProvider"),
        ("tensorrt", CUDA, NOTHING, DependencyError, "not installed"),
        ("onnxruntime", CPU, NOTHING, DependencyError, "pip install onnxruntime==1.31.1"),
        ("onnxruntime", CUDA, CPU_ONLY, DependencyError, "onnxruntime-gpu"),
        ("openvino", CUDA, EVERYTHING_GPU, ConfigError, "Intel GPUs"),
        ("openvino", CPU, Installed(("CPUExecutionProvider",), False), DependencyError, "pip install openvino==2026.4.1"),
        ("onnxruntime", torch.device("meta"), CPU_ONLY, ConfigError, "not meta"),
        ("tflite", CPU, CPU_ONLY, ConfigError, "valid: torch, onnxruntime"),
    ],
)
def test_backend_refusals_say_why(requested: str, device: torch.device, have: Installed, error: type, says: str) -> None:
    with pytest.raises(error, match=says.replace("(", r"\(")):
        resolve_backend(requested, device, have)


def test_tensorrt_providers_fall_back_to_cuda_then_cpu() -> None:
    providers = ort_providers("tensorrt", CUDA, fp16=True)
    assert providers[0] == ("TensorrtExecutionProvider", {"device_id": 1, "trt_fp16_enable": True, "trt_engine_cache_enable": True})
    assert providers[1] == ("CUDAExecutionProvider", {"device_id": 1})
    assert providers[2] == "CPUExecutionProvider"
    assert ort_providers("onnxruntime", CPU) == ["CPUExecutionProvider"]


def test_pinned_runtimes_are_installed() -> None:
    """requirements.txt pins onnxruntime and openvino: both CPU runtimes are present wherever the suite runs."""
    have = installed()
    assert "CPUExecutionProvider" in have.ort_providers and have.openvino


def test_method_refuses_tensorrt_on_cpu_with_the_reason(tmp_path: Path) -> None:
    opts = build_options(DeFusion.Options, {"runtime": "tensorrt"}, "defusion")
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        DeFusion(opts, CPU, torch.float32, tmp_path, random_init=True, config="test_tiny")
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        tiny_method(tmp_path, runtime="tensorrt")


# ---------------------------------------------------------------------------------------- tiny parity


@pytest.mark.parametrize("runtime", ONNX_RUNTIMES)
def test_defusion_backend_matches_torch_on_tiny_weights(runtime: str, tmp_path: Path, onnx_cache: Path) -> None:
    """Batch of 2, odd size (so the dynamic graph's shape-generic resizes are exercised)."""
    g = torch.Generator().manual_seed(7)
    ir, vis = torch.rand(2, 1, 37, 51, generator=g), torch.rand(2, 1, 37, 51, generator=g)
    build = lambda rt: DeFusion(build_options(DeFusion.Options, {"runtime": rt}), CPU, torch.float32, tmp_path,  # noqa: E731
                                random_init=True, config="test_tiny", seed=3)
    ref = build("torch").fuse(ir, vis)
    method = build(runtime)
    assert method.backend == runtime
    assert _rel_err(method.fuse(ir, vis), ref) <= REL_TOL
    assert [p.name.split("-")[2] for p in onnx_cache.glob("defusion-fuse-*.onnx")] == ["openvino" if runtime == "openvino" else "dyn"]


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ONNX_RUNTIMES)
def test_dmfuse_backend_matches_torch_on_tiny_weights(runtime: str, tmp_path: Path, onnx_cache: Path) -> None:
    g = torch.Generator().manual_seed(8)
    ir, vis = torch.rand(1, 1, 40, 70, generator=g), torch.rand(1, 1, 40, 70, generator=g)
    ref = tiny_method(tmp_path, init_seed=2).fuse(ir, vis)
    assert (ref > 0).float().mean() > 0.5  # a live network, not one saturated to zeros
    method = tiny_method(tmp_path, init_seed=2, runtime=runtime)
    assert _rel_err(method.fuse(ir, vis), ref) <= REL_TOL
    assert {p.name.split("-")[1] for p in onnx_cache.glob("dmfuse-*.onnx")} == {"unet", "head"}


def test_tiny_models_come_from_their_seed_not_the_global_rng(tmp_path: Path) -> None:
    torch.manual_seed(123)
    a = tiny_net(5).state_dict()
    torch.manual_seed(456)
    b = tiny_net(5).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fusion_rule.0.weight"], tiny_net(6).state_dict()["fusion_rule.0.weight"])
    torch.manual_seed(1)
    m1 = tiny_method(tmp_path, init_seed=4).model.state_dict()
    torch.manual_seed(2)
    m2 = tiny_method(tmp_path, init_seed=4).model.state_dict()
    assert all(torch.equal(m1[k], m2[k]) for k in m1)


class _TwoOutputs(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x + 1, x * 2


@pytest.mark.parametrize("runtime", ONNX_RUNTIMES)
def test_runner_returns_every_output_of_one_inference(runtime: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A multi-output graph (DMFuse's U-Net has five) is run once per call, not once per output."""
    from fusion_ros.deploy.export import export_onnx

    path = export_onnx(_TwoOutputs(), (torch.zeros(1, 2, 4, 4),), tmp_path / "two.onnx", input_names=("x",), output_names=("a", "b"))
    runner = OnnxRunner(path, runtime, CPU, threads=1)
    calls = []
    if runtime == "openvino":
        import openvino

        infer = openvino.InferRequest.infer
        monkeypatch.setattr(openvino.InferRequest, "infer", lambda self, *a, **k: calls.append(1) or infer(self, *a, **k))
    else:
        import onnxruntime

        run = onnxruntime.InferenceSession.run
        monkeypatch.setattr(onnxruntime.InferenceSession, "run", lambda self, *a, **k: calls.append(1) or run(self, *a, **k))
    x = torch.arange(32, dtype=torch.float32).reshape(1, 2, 4, 4)
    a, b = runner(x=x)
    assert len(calls) == 1
    torch.testing.assert_close(a, x + 1, rtol=0, atol=0)
    torch.testing.assert_close(b, x * 2, rtol=0, atol=0)


@pytest.mark.parametrize("runtime", ONNX_RUNTIMES)
def test_static_shape_runner_compiles_once_per_shape(runtime: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``static_shapes``: one compilation per input shape, reused while kept, the least recently used
    dropped beyond ``max_shapes``; each compilation has that shape fixed."""
    from fusion_ros.deploy.export import export_onnx

    axes = {n: {2: "height", 3: "width"} for n in ("x", "a", "b")}
    path = export_onnx(_TwoOutputs(), (torch.zeros(1, 2, 4, 4),), tmp_path / "two.onnx", input_names=("x",),
                       output_names=("a", "b"), dynamic_axes=axes)
    compiled: list[object] = []
    compile_ = OnnxRunner._compile
    monkeypatch.setattr(OnnxRunner, "_compile", lambda self, shapes: compiled.append(shapes) or compile_(self, shapes))
    runner = OnnxRunner(path, runtime, CPU, threads=1, static_shapes=True, max_shapes=2)
    assert compiled == [] and runner.compiled_shapes == []
    a, b, c = (1, 2, 5, 7), (1, 2, 6, 4), (1, 2, 3, 9)
    for shape in (a, b, a, c, a, b):
        x = torch.arange(float(np.prod(shape))).reshape(shape)
        plus, times = runner(x=x)
        torch.testing.assert_close(plus, x + 1, rtol=0, atol=0)
        torch.testing.assert_close(times, x * 2, rtol=0, atol=0)
    assert compiled == [(a,), (b,), (c,), (b,)]  # a kept (used again before c came), b dropped for c
    assert runner.compiled_shapes == [(a,), (b,)]
    assert OnnxRunner(path, runtime, CPU, threads=1).compiled_shapes == [None]  # default: one dynamic compilation


def test_static_shape_runner_refuses_an_empty_cache(tmp_path: Path) -> None:
    from fusion_ros.deploy.export import export_onnx

    path = export_onnx(_TwoOutputs(), (torch.zeros(1, 2, 4, 4),), tmp_path / "two.onnx", input_names=("x",), output_names=("a", "b"))
    with pytest.raises(ValueError, match="max_shapes must be at least 1"):
        OnnxRunner(path, "onnxruntime", CPU, static_shapes=True, max_shapes=0)


@pytest.mark.parametrize("runtime", ONNX_RUNTIMES)
def test_defusion_static_shape_path_matches_torch_at_two_sizes(runtime: str, tmp_path: Path) -> None:
    """One dynamic graph, compiled per padded size by one runner: an odd size and a second size, each
    against the exact torch path, and both compilations kept."""
    net = tiny_net(6).requires_grad_(False)
    fuse = OnnxFuse(export_fuse_graph(net, tmp_path / "g.onnx", form=export_form(runtime)), runtime, CPU, threads=1)
    g = torch.Generator().manual_seed(9)
    for h, w in ((37, 51), (48, 40)):
        ir, vis = torch.rand(1, 1, h, w, generator=g), torch.rand(1, 1, h, w, generator=g)
        ref = run_pipeline(net, ir, vis)
        assert float(ref.abs().max()) > 0
        assert _rel_err(run_pipeline(net, ir, vis, fuse=fuse), ref) <= REL_TOL, (h, w)
    assert fuse.runner.compiled_shapes == [((1, 3, 69, 83),) * 2, ((1, 3, 80, 72),) * 2]


# ---------------------------------------------------------------------------------------- golden parity


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ONNX_RUNTIMES)
def test_defusion_backend_matches_golden(shared_dir: Path, runtime: str, tmp_path: Path) -> None:
    """The authors' fused outputs (seeded released-size network, two crops) through each runtime."""
    golden = shared_dir / "golden" / "defusion"
    net = DeFusionNet().eval()
    load_defusion_state_dict(net, golden / "weights_seed0.safetensors")
    fuse = OnnxFuse(export_fuse_graph(net, tmp_path / "defusion.onnx", form=export_form(runtime)), runtime, CPU)
    for case in ("case1", "case2"):
        ir = torch.from_numpy(np.load(golden / f"{case}_input_ir.npy"))
        vis = torch.from_numpy(np.load(golden / f"{case}_input_vis.npy"))
        out = run_pipeline(net, ir, vis, fuse=fuse)
        assert _rel_err(out, np.load(golden / f"{case}_fused.npy")) <= REL_TOL, case


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ONNX_RUNTIMES)
def test_dmfuse_backend_matches_golden(shared_dir: Path, runtime: str, tmp_path: Path) -> None:
    """The authors' U-Net features (small seeded U-Net, saved noisy inputs and levels) and fused output
    (released head on their quarter-width features) through each runtime's graphs."""
    golden = shared_dir / "golden" / "dmfuse"
    unet = load_unet(golden / "unet_small_seed0.safetensors", CONFIGS["small"])
    model = DMFuseModel(unet, DMFuseHead(CONFIGS["small"].feature_channels())).eval()
    features = OnnxRunner(export_unet_graph(model, tmp_path / "unet.onnx"), runtime, CPU)
    calls = json.loads((golden / "case1_levels.json").read_text())["calls"]
    for m in ("ir", "vis"):
        per_t = []
        for t in TIMESTEPS:
            x_t = torch.from_numpy(np.load(golden / f"case1_xnoisy_t{t}_{m}.npy"))
            per_t.append(features(x_t=x_t, level=torch.tensor([calls[f"{m}_t{t}"]["used_float32"]], dtype=torch.float32)))
        for level, parts in enumerate(zip(*per_t)):
            assert _rel_err(torch.cat(parts, 1), np.load(golden / f"case1_feats_{m}_l{level}.npy")) <= REL_TOL, (m, level)

    head_model = DMFuseModel(unet, load_head(golden / "head_official.safetensors")).eval()
    feats = [torch.from_numpy(np.load(golden / f"case1q_feats_{m}_l{lv}.npy")) for m in ("ir", "vis") for lv in range(5)]
    head = OnnxRunner(export_head_graph(head_model, tmp_path / "head.onnx", tuple(feats[0].shape[-2:])), runtime, CPU)
    names = [f"{m}_{lv}" for m in ("ir", "vis") for lv in range(5)]
    assert _rel_err(head(**dict(zip(names, feats)))[0], np.load(golden / "case1_fused.npy")) <= REL_TOL


# ---------------------------------------------------------------------------------------- node parameter


@pytest.mark.parametrize("method", ["defusion", "dmfuse"])
def test_runtime_is_a_live_node_parameter(method: str) -> None:
    """``ros2 param set /fusion_node <method>.runtime openvino`` passes the node's validation like any option."""
    from fusion_ros.config import build_config, parameter_table

    spec = {s.name: s for s in parameter_table()}[f"{method}.runtime"]
    assert spec.default == "torch" and not spec.read_only
    assert set(BACKENDS) <= set(spec.choices)
    config = build_config({"method": method, f"{method}.runtime": "openvino"}, check_available=False)
    assert config.options.runtime == "openvino"
    with pytest.raises(ConfigError, match="runtime"):
        build_config({"method": method, f"{method}.runtime": "tflite"}, check_available=False)


@pytest.mark.parametrize("opt", ["defusion.runtime=tflite", "runtime=tflite", "pyramid.runtime=openvino", "runtime"])
def test_bench_checks_method_options_before_any_run(opt: str, tmp_path: Path) -> None:
    from fusion_ros.cli import main

    assert main(["bench", "--methods", "defusion", "--sizes", "64x64", "--opt", opt, "--out", str(tmp_path)]) == 1
    assert not list(tmp_path.iterdir())
