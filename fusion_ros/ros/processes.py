"""``fusion_node`` as a separate process in an isolated ROS environment (no rclpy needed here).

This is how the demo, ``fusion-ros replay`` and the tests put the node behind real inter-process
DDS transport: :func:`ros_env` makes an environment that talks only on this host with the shipped
Fast DDS profile, :func:`start_node_process` starts the node in it, :func:`stop_process` ends it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from fusion_ros.errors import ConfigError, FusionError

__all__ = ["FASTDDS_PROFILE_NAME", "find_fastdds_profile", "ros_env", "start_node_process", "stop_process"]

#: The shipped Fast DDS profile: shared-memory transport with a segment large enough for 16-bit
#: thermal and full-HD RGB frames (the default one silently drops a 640x512 mono16 image).
FASTDDS_PROFILE_NAME = "fastdds_shm.xml"


def find_fastdds_profile() -> Path:
    """The shipped ``config/fastdds_shm.xml``: in the source tree beside the package, or installed
    under ``share/fusion_ros/config`` (pip prefix or an ament/colcon install)."""
    import fusion_ros

    candidates = [Path(fusion_ros.__file__).resolve().parents[1] / "config" / FASTDDS_PROFILE_NAME]
    candidates.append(Path(sys.prefix) / "share" / "fusion_ros" / "config" / FASTDDS_PROFILE_NAME)
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "fusion_ros" / "config" / FASTDDS_PROFILE_NAME)
    for path in candidates:
        if path.is_file():
            return path
    raise FusionError(f"Fast DDS profile {FASTDDS_PROFILE_NAME} not found (looked in {', '.join(str(p.parent) for p in candidates)})")


def ros_env(domain_id: int, profile: Path | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for ROS processes that only talk to each other on this host.

    Fast DDS with the shared-memory profile, ``ROS_DOMAIN_ID`` = ``domain_id``, discovery limited
    to localhost. The Python path is extended so a child runs this same ``fusion_ros``.
    """
    import fusion_ros

    if not 0 <= domain_id <= 101:
        raise ConfigError(f"ROS_DOMAIN_ID must be in 0..101, got {domain_id}")
    env = dict(os.environ if base is None else base)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated since Jazzy; it would conflict with the range
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile if profile is not None else find_fastdds_profile())
    env["RCUTILS_COLORIZED_OUTPUT"] = "0"
    pkg_root = str(Path(fusion_ros.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([pkg_root, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    return env


def start_node_process(
    params: Mapping[str, Any],
    env: Mapping[str, str],
    log: IO[bytes] | int | None = subprocess.DEVNULL,
    remaps: Mapping[str, str] | None = None,
    node_name: str = "fusion_node",
) -> subprocess.Popen[bytes]:
    """Start ``fusion_node`` (``python -m fusion_ros.ros.node``) with ``-p name:=value`` parameters.

    The child gets its own process group so :func:`stop_process` can end it and anything it starts.
    """
    cmd = [sys.executable, "-m", "fusion_ros.ros.node", "--ros-args", "-r", f"__node:={node_name}"]
    for name, value in params.items():
        cmd += ["-p", f"{name}:={_param_literal(value)}"]
    for src, dst in (remaps or {}).items():
        cmd += ["-r", f"{src}:={dst}"]
    return subprocess.Popen(cmd, env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _param_literal(value: Any) -> str:
    """A value as ``--ros-args -p`` parses it (YAML): bools lower-case, lists in brackets."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_param_literal(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> int:
    """SIGINT (a clean rclpy shutdown), then SIGTERM, then SIGKILL to the process group; returns the exit code."""
    for sig, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait(timeout=5.0)
