"""ONNX export of the network methods: checked graphs with their contract in the metadata, dynamic where
the network allows it, one file per size where it does not, the on-disk cache, and ``fusion-ros export``."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

from fusion_ros.cli import main
from fusion_ros.deploy.export import cache_dir, cached_graph, read_metadata, state_digest
from fusion_ros.errors import ConfigError
from fusion_ros.methods.defusion import DeFusion
from fusion_ros.methods.defusion.backends import export_fuse_graph, graph_name
from fusion_ros.methods.defusion.testing import tiny_net
from fusion_ros.methods.dmfuse.testing import tiny_method
from fusion_ros.options import build_options


def _spatial_dims(path: Path) -> list[list[int | str]]:
    """Height and width of each graph input: ints when static, names when dynamic."""
    graph = onnx.load(str(path)).graph
    return [[d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim][2:] for i in graph.input]


def test_defusion_dynamic_graph_records_its_contract(tmp_path: Path) -> None:
    net = tiny_net(1)
    path = export_fuse_graph(net, tmp_path / "g.onnx", options={"pad": 16, "runtime": "openvino"})
    onnx.checker.check_model(onnx.load(str(path)))
    assert _spatial_dims(path) == [["height", "width"], ["height", "width"]]
    meta = read_metadata(path)
    assert meta["method"] == "defusion" and meta["graph"] == "fuse"
    assert json.loads(meta["options"]) == {"pad": 16, "runtime": "openvino"}
    assert "reflect-padded by 16" in meta["inputs"] and "crop 16" in meta["outputs"]
    assert meta["weights_digest"] == state_digest(net)


def test_defusion_static_graph_has_the_padded_size(tmp_path: Path) -> None:
    opts = build_options(DeFusion.Options, {"pad": 8}, "defusion")
    method = DeFusion(opts, torch.device("cpu"), torch.float32, tmp_path, random_init=True, config="test_tiny")
    (path,) = method.export_onnx(tmp_path / "out", (30, 50))
    assert _spatial_dims(path) == [[46, 66], [46, 66]]
    assert path.name == graph_name(method.net, (46, 66))
    assert read_metadata(path)["form"] == "generic"


def test_defusion_exports_the_form_of_its_runtime(tmp_path: Path) -> None:
    """``--opt runtime=openvino`` writes the graph OpenVINO runs fastest (the form the method itself runs)."""
    opts = build_options(DeFusion.Options, {"runtime": "openvino"}, "defusion")
    method = DeFusion(opts, torch.device("cpu"), torch.float32, tmp_path, random_init=True, config="test_tiny")
    (path,) = method.export_onnx(tmp_path / "out", None)
    assert read_metadata(path)["form"] == "openvino"
    assert path.name == graph_name(method.net, None, "openvino")


def test_dmfuse_exports_a_dynamic_unet_and_a_head_per_size(tmp_path: Path) -> None:
    method = tiny_method(tmp_path)
    with pytest.raises(ConfigError, match="per frame size"):
        method.export_onnx(tmp_path / "out", None)
    unet, head = method.export_onnx(tmp_path / "out", (40, 70))
    assert _spatial_dims(unet)[0] == ["height", "width"]
    assert {tuple(d) for d in _spatial_dims(head)} == {(64 >> lv, 96 >> lv) for lv in range(5)}
    assert read_metadata(unet)["graph"] == "unet" and read_metadata(head)["graph"] == "head"
    assert json.loads(read_metadata(head)["options"])["seed"] == 0


def test_cache_builds_once_and_keys_on_the_weights(tmp_path: Path) -> None:
    built: list[Path] = []

    def build(path: Path) -> Path:
        built.append(path)
        path.write_bytes(b"graph")
        return path

    assert cached_graph(tmp_path, "a.onnx", build) == cached_graph(tmp_path, "a.onnx", build) == tmp_path / "a.onnx"
    assert len(built) == 1
    assert graph_name(tiny_net(1), None) != graph_name(tiny_net(2), None)
    assert graph_name(tiny_net(1), None) == graph_name(tiny_net(1), None)


def test_cache_folder_next_to_the_weights_else_the_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FUSION_ROS_ONNX_CACHE", raising=False)
    assert cache_dir(tmp_path) == tmp_path / "onnx"
    assert cache_dir(tmp_path / "missing") == Path.home() / ".cache" / "fusion_ros" / "onnx"
    monkeypatch.setenv("FUSION_ROS_ONNX_CACHE", str(tmp_path / "elsewhere"))
    assert cache_dir(tmp_path) == tmp_path / "elsewhere"


@pytest.mark.slow
def test_export_command_writes_checked_graphs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``fusion-ros export`` on the released-size DeFusion (random weights: same graph)."""
    assert main(["export", "--method", "defusion", "--format", "onnx", "--size", "64x48", "-o", str(tmp_path), "--random-weights"]) == 0
    (path,) = tmp_path.glob("*.onnx")
    assert _spatial_dims(path) == [[80, 96], [80, 96]]
    assert str(path) in capsys.readouterr().out


def test_export_command_refuses_a_weight_free_method_and_a_bad_size(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["export", "--method", "pyramid", "--dynamic", "-o", str(tmp_path)])
    assert main(["export", "--method", "defusion", "--size", "64by48", "-o", str(tmp_path), "--random-weights"]) == 1
