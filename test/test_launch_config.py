"""launch/fuse.launch.py, config/fusion.yaml and config/fastdds_shm.xml: shape and agreement with the node.

launch and launch_ros are not installable from PyPI, so the launch file is checked by its syntax
tree (standard API only, every argument described); where they are installed it is also run.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from fusion_ros.config import parameter_table, render_yaml
from fusion_ros.registry import DEFAULT_METHOD

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "fuse.launch.py"
REQUIRED_ARGS = {"method", "thermal_topic", "rgb_topic", "fused_topic", "namespace", "params_file", "device", "use_sim_time"}
ALLOWED_IMPORTS = {"os", "ament_index_python.packages", "launch", "launch.actions", "launch.substitutions",
                   "launch_ros.actions"}


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _kw(call: ast.Call, key: str):
    for kw in call.keywords:
        if kw.arg == key:
            return kw.value
    return None


@pytest.fixture(scope="module")
def launch_tree() -> ast.Module:
    source = LAUNCH.read_text()
    compile(source, str(LAUNCH), "exec")
    return ast.parse(source)


def test_launch_uses_only_the_standard_launch_api(launch_tree):
    modules = set()
    for node in ast.walk(launch_tree):
        if isinstance(node, ast.Import):
            modules.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            modules.add(node.module)
    assert modules <= ALLOWED_IMPORTS, modules - ALLOWED_IMPORTS
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in launch_tree.body)


def test_launch_arguments_are_declared_and_described(launch_tree):
    declared = {}
    for call in _calls(launch_tree, "DeclareLaunchArgument"):
        name = ast.literal_eval(call.args[0])
        declared[name] = call
        description = _kw(call, "description")
        assert description is not None and ast.literal_eval(description).strip(), f"{name} has no description"
        assert _kw(call, "default_value") is not None, f"{name} has no default"
    assert REQUIRED_ARGS <= set(declared)
    choices = ast.literal_eval(_kw(declared["use_sim_time"], "choices"))
    assert ast.literal_eval(_kw(declared["use_sim_time"], "default_value")) in choices
    # every declared argument is used
    used = {ast.literal_eval(c.args[0]) for c in _calls(launch_tree, "LaunchConfiguration")}
    assert set(declared) <= used


def test_launch_runs_fusion_node_with_the_shipped_config_and_profile(launch_tree):
    (node,) = _calls(launch_tree, "Node")
    assert ast.literal_eval(_kw(node, "package")) == "fusion_ros"
    assert ast.literal_eval(_kw(node, "executable")) == "fusion_node"
    assert ast.literal_eval(_kw(node, "name")) == "fusion_node"
    remapped = {ast.literal_eval(t.elts[0]) for t in _kw(node, "remappings").elts}
    assert {"thermal/image_raw", "rgb/image_raw", "rgb/camera_info", "fused/image_raw", "fused/camera_info"} <= remapped
    env = {ast.literal_eval(c.args[0]) for c in _calls(launch_tree, "SetEnvironmentVariable")}
    assert "FASTDDS_DEFAULT_PROFILES_FILE" not in env  # set for the node only, and only when given (see below)
    joined = [ast.unparse(c) for c in _calls(launch_tree, "join")]
    assert any("'config'" in j and "'fusion.yaml'" in j for j in joined)
    assert any("'config'" in j and "'fastdds_shm.xml'" in j for j in joined)


@pytest.mark.skipif(
    importlib.util.find_spec("launch") is None or importlib.util.find_spec("launch_ros") is None,
    reason="launch/launch_ros are not installed (not on PyPI); the syntax checks above still ran",
)
def test_launch_description_builds(monkeypatch, tmp_path):
    import ament_index_python.packages as packages

    monkeypatch.setattr(packages, "get_package_share_directory", lambda pkg: str(REPO))
    spec = importlib.util.spec_from_file_location("fuse_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    names = {a.name for a in description.get_launch_arguments()}
    assert REQUIRED_ARGS <= names


def _load_launch_with_stubs(monkeypatch: pytest.MonkeyPatch):
    """Run the launch file against minimal stand-ins of launch/launch_ros that record what it builds."""
    import sys
    import types

    def recorder(name: str) -> type:
        def init(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

        return type(name, (), {"__init__": init})

    launch_configuration = recorder("LaunchConfiguration")
    launch_configuration.perform = lambda self, context: context[self.args[0]]
    modules = {
        "launch": {"LaunchDescription": recorder("LaunchDescription")},
        "launch.actions": {n: recorder(n) for n in ("DeclareLaunchArgument", "OpaqueFunction", "SetEnvironmentVariable")},
        "launch.substitutions": {"LaunchConfiguration": launch_configuration, "PythonExpression": recorder("PythonExpression")},
        "launch_ros": {},
        "launch_ros.actions": {"Node": recorder("Node")},
        "ament_index_python": {},
        "ament_index_python.packages": {"get_package_share_directory": lambda pkg: str(REPO)},
    }
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("fuse_launch_stubbed", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("given", "overrides"),
    [
        ({}, {"use_sim_time": False}),  # the params file's method and device stand
        ({"method": "defusion", "device": "cuda", "use_sim_time": "true"}, {"method": "defusion", "device": "cuda", "use_sim_time": True}),
    ],
)
def test_launch_overrides_the_params_file_only_with_given_arguments(monkeypatch, given, overrides):
    module = _load_launch_with_stubs(monkeypatch)
    (entities,) = module.generate_launch_description().args
    defaults = {e.args[0]: e.kwargs["default_value"] for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    (opaque,) = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    (node,) = opaque.kwargs["function"]({**defaults, **given})
    params_file, node_overrides = node.kwargs["parameters"]
    assert params_file.args == ("params_file",)
    assert node_overrides == overrides


def _launched_node(monkeypatch, **given):
    module = _load_launch_with_stubs(monkeypatch)
    (entities,) = module.generate_launch_description().args
    defaults = {e.args[0]: e.kwargs["default_value"] for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    (opaque,) = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    assert not any(type(e).__name__ == "SetEnvironmentVariable" and e.args[0] == "FASTDDS_DEFAULT_PROFILES_FILE" for e in entities)
    (node,) = opaque.kwargs["function"]({**defaults, **given})
    return node


@pytest.mark.parametrize(
    ("given", "env"),
    [
        ({}, {"FASTDDS_DEFAULT_PROFILES_FILE": str(REPO / "config" / "fastdds_shm.xml")}),  # absent: the shipped profile
        ({"fastdds_profile": "/etc/my_profile.xml"}, {"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/my_profile.xml"}),
        ({"fastdds_profile": "keep"}, {}),  # the command line's way to leave the environment alone
        ({"fastdds_profile": ""}, {}),  # an including launch file's '': never an empty variable
        ({"fastdds_profile": "  "}, {}),
    ],
)
def test_fastdds_profile_empty_or_keep_leaves_the_environment_alone(monkeypatch, given, env):
    assert _launched_node(monkeypatch, **given).kwargs["additional_env"] == env


def test_params_file_argument_documents_the_namespace_wildcard_key(launch_tree):
    (call,) = [c for c in _calls(launch_tree, "DeclareLaunchArgument") if ast.literal_eval(c.args[0]) == "params_file"]
    assert "/**/fusion_node" in ast.literal_eval(_kw(call, "description"))


@pytest.mark.parametrize(("key", "applies"), [("/**/fusion_node", True), ("fusion_node", False)])
def test_params_file_applies_to_a_namespaced_node_only_with_the_wildcard_key(tmp_path, key, applies):
    """What rcl does with the key when the launch file's namespace:= is set: the ui's Export
    settings and config/fusion.yaml write /**/fusion_node, which applies; a bare key would not."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.context import Context

    from fusion_ros.registry import DEFAULT_METHOD
    from fusion_ros.ros.node import FusionNode
    from fusion_ros.ui.logic import export_yaml

    text = export_yaml({"sync.slop": 0.07, "method": "average"})
    if key != "/**/fusion_node":
        text = text.replace("/**/fusion_node:", f"{key}:").replace("'/**/fusion_node':", f"{key}:")
    assert f"{key}:" in text or f"'{key}':" in text
    params = tmp_path / "params.yaml"
    params.write_text(text)
    context = Context()
    rclpy.init(context=context, args=["--ros-args", "--params-file", str(params)], domain_id=100 + os.getpid() % 100)
    try:
        node = FusionNode(context=context, namespace="/robot1/thermal")
        try:
            got = (node.get_parameter("sync.slop").value, node.get_parameter("method").value)
            assert got == ((0.07, "average") if applies else (0.05, DEFAULT_METHOD))
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


# -- config/fusion.yaml -------------------------------------------------------------------------


def test_params_yaml_is_the_generated_one():
    current = (REPO / "config" / "fusion.yaml").read_text()
    assert current == render_yaml(), "config/fusion.yaml is stale: fusion-ros params > config/fusion.yaml"


def test_params_yaml_documents_every_parameter_with_its_default():
    text = (REPO / "config" / "fusion.yaml").read_text()
    params = yaml.safe_load(text)["/**/fusion_node"]["ros__parameters"]
    lines = text.splitlines()
    for spec in parameter_table():
        node = params
        *groups, leaf = spec.name.split(".")
        for g in groups:
            node = node[g]
        assert node[leaf] == spec.default, spec.name
        # the line before the value (or the comment block above it) explains it
        index = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{leaf}:") and lines[i - 1].strip().startswith("#"))
        assert lines[index - 1].strip().startswith("#"), spec.name
        assert spec.description


def test_parameter_table_is_consistent():
    names = [s.name for s in parameter_table()]
    assert len(names) == len(set(names))
    for spec in parameter_table():
        if spec.choices:
            assert spec.default in spec.choices, spec.name
        if spec.range:
            assert spec.range[0] <= spec.default <= spec.range[1], spec.name
    for required in ("method", "device", "precision", "sync.queue_size", "sync.slop", "thermal.normalization",
                     "thermal.window", "registration.homography", "weights_dir"):
        assert required in names


# -- config/fastdds_shm.xml ---------------------------------------------------------------------


def test_fastdds_profile_has_a_large_shared_memory_segment():
    ns = {"d": "http://www.eprosima.com"}
    root = ET.parse(REPO / "config" / "fastdds_shm.xml").getroot()
    transports = {t.find("d:transport_id", ns).text: t for t in root.iterfind(".//d:transport_descriptor", ns)}
    shm = [t for t in transports.values() if t.find("d:type", ns).text == "SHM"]
    assert len(shm) == 1 and int(shm[0].find("d:segment_size", ns).text) >= 32 * 1024 * 1024
    participant = root.find(".//d:participant", ns)
    assert participant.get("is_default_profile") == "true"
    used = [e.text for e in participant.iterfind(".//d:userTransports/d:transport_id", ns)]
    assert set(used) == set(transports) and any(transports[u].find("d:type", ns).text == "UDPv4" for u in used)
    assert participant.find(".//d:useBuiltinTransports", ns).text == "false"


# -- the pip-installed launchers (lib/fusion_ros/*) -------------------------------------------


@pytest.fixture(scope="module")
def venv_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv laid out as `pip install .` leaves it: the launchers in <venv>/lib/fusion_ros/, the
    package and its dependencies importable from the venv's own Python only."""
    import subprocess
    import sys
    import sysconfig

    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next(venv.glob("lib/python3*/site-packages"))
    # the project's dependencies (this test's environment) and the package, as if installed here
    (site / "deps.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n{REPO}\n")
    lib = venv / "lib" / "fusion_ros"
    lib.mkdir(parents=True)
    for launcher in (REPO / "resource" / "lib").iterdir():
        (lib / launcher.name).write_bytes(launcher.read_bytes())
        (lib / launcher.name).chmod(0o755)
    return venv


def _foreign_env() -> dict[str, str]:
    """PATH with only the system's directories (a python3 without fusion_ros, or none), no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    return env


def test_installed_cli_launcher_runs_with_a_foreign_path(venv_prefix):
    import shutil
    import subprocess

    if shutil.which("python3", path=_foreign_env()["PATH"]) is None:
        pytest.skip("no python3 on the system PATH to start the launcher's #! line")
    result = subprocess.run([str(venv_prefix / "lib" / "fusion_ros" / "fusion-ros"), "methods"], env=_foreign_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{DEFAULT_METHOD} (default)" in result.stdout, result.stdout[-2000:]


@pytest.mark.slow
def test_installed_node_launcher_runs_with_a_foreign_path(venv_prefix, tmp_path):
    import shutil
    import signal
    import subprocess
    import time

    pytest.importorskip("rclpy")
    env = dict(_foreign_env(), ROS_DOMAIN_ID=str(150 + os.getpid() % 50), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    if shutil.which("python3", path=env["PATH"]) is None:
        pytest.skip("no python3 on the system PATH to start the launcher's #! line")
    log = tmp_path / "node.log"
    with log.open("w") as out:
        node = subprocess.Popen([str(venv_prefix / "lib" / "fusion_ros" / "fusion_node")], env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and node.poll() is None and "fusing with" not in log.read_text():
            time.sleep(0.2)
        node.send_signal(signal.SIGINT)
        rc = node.wait(60)
    text = log.read_text()
    assert f"fusing with '{DEFAULT_METHOD}'" in text and rc == 0, text[-2000:]
    assert "ModuleNotFoundError" not in text
