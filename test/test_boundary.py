"""The fusion core never imports the ROS layer: every module outside ``fusion_ros.ros`` imports with
rclpy (and the ROS message packages, and ``fusion_ros.ros`` itself) made unimportable."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fusion_ros

PACKAGE = Path(fusion_ros.__file__).resolve().parent
#: Modules that run when imported (the CLI's ``__main__``, the Streamlit page script): their imports
#: are checked instead of the modules themselves.
SCRIPTS = {"fusion_ros.__main__", "fusion_ros.ui.app"}

_CHILD = r"""
import importlib, importlib.abc, json, sys

BLOCKED = ("rclpy", "rcl_interfaces", "rosidl_runtime_py", "sensor_msgs", "std_msgs", "builtin_interfaces",
           "diagnostic_msgs", "fusion_ros.ros")

class NoROS(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"{name} is not importable here (no ROS)")
        return None

sys.meta_path.insert(0, NoROS())
try:
    import rclpy  # noqa: F401
    sys.exit("the finder did not block rclpy")
except ImportError:
    pass
failed = {}
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except Exception as err:  # noqa: BLE001 - report every module, not just the first
        failed[name] = f"{type(err).__name__}: {err}"
print(json.dumps(failed))
"""


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _core_modules() -> tuple[list[str], list[str]]:
    """(core modules to import, modules the script modules import), ``fusion_ros.ros.*`` excluded."""
    modules, script_imports = [], set()
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        if name == "fusion_ros.ros" or name.startswith("fusion_ros.ros."):
            continue
        if name in SCRIPTS:
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    script_imports.add(node.module)
                elif isinstance(node, ast.Import):
                    script_imports.update(alias.name for alias in node.names)
            continue
        modules.append(name)
    return modules, sorted(m for m in script_imports if m.startswith("fusion_ros"))


@pytest.mark.slow
def test_every_core_module_imports_without_rclpy() -> None:
    modules, script_imports = _core_modules()
    assert {"fusion_ros.config", "fusion_ros.fuser", "fusion_ros.bag", "fusion_ros.bag_fusion", "fusion_ros.image_msgs"} <= set(modules)
    assert "fusion_ros.ros.node" not in modules
    import json

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(modules + script_imports)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    failed = json.loads(result.stdout.strip().splitlines()[-1])
    assert failed == {}, "core modules that need ROS:\n" + "\n".join(f"{k}: {v}" for k, v in failed.items())
