"""Where the weights folder is found when none is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from fusion_ros import weights


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Pretend the package runs from an install (no checkout beside it) whose share dir is ``tmp/share``."""
    share = tmp_path / "share"
    (share / "weights").mkdir(parents=True)
    monkeypatch.setattr(weights, "_SOURCE_WEIGHTS", tmp_path / "not-a-checkout" / "weights")
    monkeypatch.setattr(weights, "_share_dirs", lambda: [share])
    monkeypatch.delenv("FUSION_ROS_WEIGHTS_DIR", raising=False)
    return share / "weights"


def _checkout(root: Path) -> Path:
    (root / "weights").mkdir(parents=True)
    (root / "weights" / "manifest.toml").write_text("")
    (root / "package.xml").write_text("<package/>")
    return root


def test_installed_package_uses_its_share_dir(installed: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert weights.default_weights_dir() == installed


def test_installed_package_run_from_a_checkout_uses_its_weights(installed: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``make`` installs into .venv; the user runs .venv/bin/fusion-ros from the repository root."""
    root = _checkout(tmp_path / "fusion_ros")
    monkeypatch.chdir(root)
    assert weights.default_weights_dir() == Path.cwd() / "weights"


def test_a_weights_folder_elsewhere_is_not_taken_for_a_checkout(installed: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = _checkout(tmp_path / "other")
    (root / "package.xml").unlink()
    monkeypatch.chdir(root)
    assert weights.default_weights_dir() == installed


def test_environment_variable_wins(installed: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(_checkout(tmp_path / "fusion_ros"))
    monkeypatch.setenv("FUSION_ROS_WEIGHTS_DIR", str(tmp_path / "mine"))
    assert weights.default_weights_dir() == tmp_path / "mine"
