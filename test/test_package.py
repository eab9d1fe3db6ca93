"""The package builds and installs like a ROS 2 ament_python package (colcon) — the layout
`ros2 launch fusion_ros fuse.launch.py` and `ros2 run fusion_ros fusion_node` rely on."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _project_files() -> list[str]:
    """Tracked + untracked-not-ignored files: what a clone (or a commit) of the project holds."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return [f for f in out.stdout.splitlines() if (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def colcon_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("ws")
    pkg = ws / "src" / "fusion_ros"
    for rel in _project_files():
        dst = pkg / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst)
    result = subprocess.run(
        [sys.executable, "-m", "colcon", "build", "--event-handlers", "console_direct-"],
        cwd=ws, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return ws / "install" / "fusion_ros"


def test_package_xml_is_format3_ament_python() -> None:
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "fusion_ros"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.iter("exec_depend")}
    assert {"rclpy", "launch", "launch_ros"} <= deps


def test_package_xml_declares_every_ros_interface_package_the_code_imports() -> None:
    """rosdep installs what package.xml names: a message or service package imported but not declared
    works here (pip wheels) and fails on a robot."""
    import re

    declared = {e.text for e in ET.parse(ROOT / "package.xml").getroot().iter("exec_depend")}
    pattern = re.compile(r"^\s*from (\w+)\.(?:msg|srv|action) import", re.MULTILINE)
    imported = {m for path in (ROOT / "fusion_ros").rglob("*.py") for m in pattern.findall(path.read_text())}
    assert {"sensor_msgs", "std_srvs"} <= imported  # the scan sees the imports it is meant to check
    assert imported <= declared, f"imported but not in package.xml: {sorted(imported - declared)}"


@pytest.mark.slow
def test_colcon_install_tree(colcon_install: Path) -> None:
    share = colcon_install / "share" / "fusion_ros"
    assert (colcon_install / "share" / "ament_index" / "resource_index" / "packages" / "fusion_ros").is_file()
    assert (share / "package.xml").is_file()
    assert (share / "launch" / "fuse.launch.py").is_file()
    assert (share / "config" / "fusion.yaml").is_file()
    assert (share / "weights" / "manifest.toml").is_file()
    for exe in ("fusion_node", "fusion-ros"):
        path = colcon_install / "lib" / "fusion_ros" / exe
        assert path.is_file() and os.access(path, os.X_OK), exe


@pytest.mark.slow
def test_installed_cli_runs(colcon_install: Path) -> None:
    site = next(colcon_install.glob("lib/python3*/site-packages"))
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    result = subprocess.run(
        [sys.executable, str(colcon_install / "lib" / "fusion_ros" / "fusion-ros"), "methods"],
        cwd=colcon_install, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    header, first = result.stdout.splitlines()[:2]
    assert header.startswith("weights folder: ") and first.startswith("balanced (default)")
    # it ran the installed copy, not the source tree
    check = subprocess.run(
        [sys.executable, "-c", "import fusion_ros; print(fusion_ros.__file__)"], cwd=colcon_install, env=env, capture_output=True, text=True
    )
    assert str(site) in check.stdout


@pytest.mark.slow
def test_installed_estimator_process_runs(colcon_install: Path) -> None:
    """registration.auto's child process starts from the install space (`python -m` of the installed module)."""
    site = next(colcon_install.glob("lib/python3*/site-packages"))
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    code = textwrap.dedent("""
        import numpy as np
        from fusion_ros.registration.estimate import EstimatorConfig
        from fusion_ros.registration.isolated import EstimatorProcess
        process = EstimatorProcess()
        flat = [(np.zeros((128, 160), np.uint16), np.zeros((256, 320, 3), np.uint8))]
        print(process(flat, EstimatorConfig(), None).refusal)
        process.close()
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=colcon_install, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("too little structure"), result.stdout + result.stderr
