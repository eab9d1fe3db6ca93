"""The one validated configuration: parameter names in, a FusionConfig out, the same for every front end."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from fusion_ros.commands.fuse import add_fuser_arguments, config_from_args
from fusion_ros.config import FusionConfig, RegistrationConfig, build_config, parameter_table
from fusion_ros.errors import ConfigError, InputError, MethodUnavailableError, UnknownMethodError
from fusion_ros.fuser import Fuser
from fusion_ros.registry import DEFAULT_METHOD, get_method_class, method_names
from fusion_ros.thermal import ThermalConfig


def test_defaults_are_one_default_per_concept() -> None:
    table = {spec.name: spec.default for spec in parameter_table()}
    config = build_config({})
    assert config == FusionConfig.create()
    assert config.method == table["method"] == DEFAULT_METHOD
    assert config.thermal == ThermalConfig()
    for name, value in table.items():
        if name.startswith("thermal."):
            expected = getattr(ThermalConfig(), name.split(".", 1)[1])
            assert value == (list(expected) if isinstance(expected, tuple) else expected), name
    assert config.registration == RegistrationConfig() and config.registration.homography is None


@pytest.mark.parametrize("method", method_names())
def test_parameters_round_trip(method: str) -> None:
    config = build_config(
        {"method": method, "thermal.smoothing": 0.25, "thermal.invert": True, "registration.homography": [1, 0, 3, 0, 1, 0, 0, 0, 1],
         "registration.resize": True},
        check_available=False,
    )  # fmt: skip
    assert config.method_class is get_method_class(method)
    assert isinstance(config.options, config.method_class.Options)
    assert build_config(config.parameters(), check_available=False) == config
    names = {spec.name for spec in parameter_table()}
    assert set(config.parameters()) <= names


@pytest.mark.parametrize(
    ("values", "error", "match"),
    [
        ({"method": "nope"}, UnknownMethodError, "valid methods: balanced"),
        ({"thermal.smothing": 0.5}, ConfigError, "unknown parameter.*thermal.smothing"),
        ({"balanced.levels": 0}, ConfigError, "balanced.levels"),
        ({"balanced.nope": 1}, ConfigError, "unknown option"),
        ({"thermal.window": [1.0]}, ConfigError, "thermal.window needs 2 numbers"),
        ({"thermal.window": [5.0, 5.0]}, ConfigError, "high > low"),
        ({"thermal.smoothing": 1.0}, ConfigError, "smoothing"),
        ({"registration.homography": [0, 0, 0, 0, 0, 0, 0, 0, 1]}, ConfigError, "singular"),
        ({"registration.homography": [1, 0, 0]}, ConfigError, "9 numbers"),
        ({"precision": "fp16", "device": "cpu"}, ConfigError, "needs a CUDA device"),
        ({"device": "tpu"}, ConfigError, "device must be"),
    ],
)
def test_bad_values_name_what_is_wrong(values: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        build_config(values, check_available=False)


def test_availability_is_checked_once_and_only_when_asked(tmp_path) -> None:
    needs = next(name for name in method_names() if get_method_class(name).weights_key)
    config = build_config({"method": needs, "weights_dir": str(tmp_path)}, check_available=False)
    assert config.weights_path == tmp_path
    with pytest.raises(MethodUnavailableError, match=str(tmp_path)):
        config.check_available()
    with pytest.raises(MethodUnavailableError):
        build_config({"method": needs, "weights_dir": str(tmp_path)})


def test_identity_means_the_same_grid_and_zero_or_non_finite_homographies_are_refused() -> None:
    identity = RegistrationConfig((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    assert identity == RegistrationConfig()
    with pytest.raises(ConfigError, match="all zeros"):  # once silently the identity (issue 13)
        RegistrationConfig((0.0,) * 9)
    with pytest.raises(ConfigError, match="non-finite"):  # once accepted: every fused frame black
        RegistrationConfig((1.0, 0.0, float("nan"), 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    assert build_config({"registration.homography": [1, 0, 0, 0, 1, 0, 0, 0, 1]}).registration.homography is None


def test_one_size_mismatch_rule() -> None:
    assert RegistrationConfig().mismatch((256, 320), (256, 320)) is None
    assert "thermal 160x128 and rgb 320x256 differ" in RegistrationConfig().mismatch((128, 160), (256, 320))
    assert RegistrationConfig(resize=True).mismatch((128, 160), (256, 320)) is None
    assert RegistrationConfig((2, 0, 0, 0, 2, 0, 0, 0, 1)).mismatch((128, 160), (256, 320)) is None
    with pytest.raises(InputError, match="registration.resize"):
        RegistrationConfig().check((128, 160), (256, 320))


def test_fuser_from_config_is_the_fuser_of_the_same_keywords() -> None:
    rng = np.random.default_rng(3)
    thermal = rng.integers(27000, 31000, (24, 32), dtype=np.uint16)
    visible = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    config = build_config({"method": "pyramid", "pyramid.levels": 3, "thermal.invert": True, "device": "cpu"})
    a = Fuser.from_config(config, warmup=False)
    b = Fuser("pyramid", device="cpu", options={"levels": 3}, thermal=ThermalConfig(invert=True), warmup=False)
    assert a.config == b.config and a.device == torch.device("cpu")
    np.testing.assert_array_equal(a(thermal, visible), b(thermal, visible))


def test_reconfigure_keeps_the_model_and_restarts_the_window() -> None:
    fuser = Fuser("average", device="cpu", warmup=False)
    method = fuser.method
    fuser(np.full((8, 8), 1000, np.uint16) + np.arange(64, dtype=np.uint16).reshape(8, 8), np.zeros((8, 8, 3), np.uint8))
    assert fuser.thermal.window is not None
    fuser.reconfigure(ThermalConfig(invert=True), RegistrationConfig(resize=True))
    assert fuser.method is method and fuser.thermal.window is None
    assert fuser.config.thermal.invert and fuser.config.registration.resize


def _args(*argv: str) -> argparse.Namespace:
    from fusion_ros.cli import Parser

    parser = Parser()
    add_fuser_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_flags_are_parameters() -> None:
    config = config_from_args(
        _args("--method", "pyramid", "--opt", "levels=4", "--thermal-window", "100", "200", "--thermal-smoothing", "0",
              "--homography", "1", "0", "2", "0", "1", "0", "0", "0", "1", "--resize", "--device", "cpu")
    )  # fmt: skip
    assert config == build_config(
        {"method": "pyramid", "pyramid.levels": 4, "thermal.normalization": "fixed", "thermal.window": [100, 200],
         "thermal.smoothing": 0.0, "registration.homography": [1, 0, 2, 0, 1, 0, 0, 0, 1], "registration.resize": True,
         "device": "cpu"}
    )  # fmt: skip
    assert config_from_args(_args()) == build_config({})


def test_cli_homography_takes_the_params_file_register_writes(tmp_path: Path) -> None:
    """`fusion-ros register --params-out F` → `fusion-ros fuse/bag --homography F`: the same matrix as its 9 numbers."""
    from fusion_ros.registration.params_file import write_params_yaml

    matrix = [2.0, 0.01, 12.5, -0.02, 1.98, -7.0, 1.3e-05, -2e-05, 1.0]
    path = write_params_yaml(tmp_path / "registration.yaml", matrix, "test")
    from_file = config_from_args(_args("--homography", str(path), "--device", "cpu"))
    from_numbers = config_from_args(_args("--homography", *map(str, matrix), "--device", "cpu"))
    assert from_file == from_numbers
    assert from_file.registration.homography == pytest.approx(tuple(matrix), rel=1e-12)
    with pytest.raises(ConfigError, match="takes 9 numbers or one parameters file, got 3"):
        config_from_args(_args("--homography", "1", "0", "2"))
    with pytest.raises(ConfigError, match="cannot read"):
        config_from_args(_args("--homography", str(tmp_path / "missing.yaml")))
    (tmp_path / "other.yaml").write_text("/**/fusion_node:\n  ros__parameters:\n    method: average\n")
    with pytest.raises(ConfigError, match="sets no registration.homography"):
        config_from_args(_args("--homography", str(tmp_path / "other.yaml")))
