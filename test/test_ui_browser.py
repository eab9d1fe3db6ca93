"""The comparison page end to end in a real headless browser (Debian's chromium, driven by Playwright).

The test starts ``streamlit run`` (the command ``fusion-ros ui`` runs) on a free localhost port,
opens the page, waits for the generated pair to be fused with the default method, changes an
option and waits for the new image, then downloads the exported settings and checks that the node's
own parameter validation reads them back, and that the image on the page is exactly what a
:class:`~fusion_ros.fuser.Fuser` built from those settings computes; finally it imports an edited
parameters file and checks that the widgets and the image follow it.

``test/browser_setup.sh`` installs the browser (``make test`` runs it); the test runs it itself when
no browser is found, and skips, saying why, only when that fails. With
``FUSION_ROS_UPDATE_SCREENSHOT=1`` it also rewrites ``docs/img/ui.png`` (the README's picture).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import yaml
from PIL import Image

from fusion_ros.commands import ui as ui_command
from fusion_ros.config import build_config, parameter_table
from fusion_ros.fuser import Fuser
from fusion_ros.registry import DEFAULT_METHOD
from fusion_ros.scenes import render_pair
from fusion_ros.ui import logic

pytest.importorskip("streamlit", reason="streamlit is not installed (pip install -r requirements.txt)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -r requirements.txt)")

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "test" / "browser_setup.sh"
SCREENSHOT = ROOT / "docs" / "img" / "ui.png"
# Root in a container: no sandbox; no GPU; and nothing that reaches out to the network. Playwright
# adds --headless (headless=True) and --user-data-dir (a fresh profile folder per run).
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--no-proxy-server",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]  # fmt: skip
SERVER_START_S = 60
PAGE_TIMEOUT_MS = 60_000
# The generated pair of the test: the page's night street at t=3 s, small so a CPU fuses it quickly.
SCENE = {"scene_t": "3.0", "scene_size": "320x256", "scene_seed": "0"}


# localhost only: never through an HTTP proxy from the environment
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    path = _find_chromium()
    if path is None and SETUP.is_file():
        try:
            subprocess.run([shutil.which("sh") or "/bin/sh", str(SETUP)], check=False, timeout=900)
        except (OSError, subprocess.TimeoutExpired):
            pass  # reported by the skip below
        path = _find_chromium()
    if path is None:
        pytest.skip("no chromium: test/browser_setup.sh could not install Debian's chromium here (needs apt and root)")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``fusion-ros ui``'s streamlit command on a free port; yields the page URL."""
    port = _free_port()
    args = argparse.Namespace(port=port, address="127.0.0.1", data=None, weights_dir=None, detector=None)
    log_path = tmp_path_factory.mktemp("ui") / "streamlit.log"
    env = {**ui_command.streamlit_env(), "HOME": str(log_path.parent)}  # no ~/.streamlit of the user's
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(ui_command.streamlit_command(args), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=log_path.parent)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with {proc.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}")
            try:
                with _NO_PROXY.open(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer within {SERVER_START_S} s:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def context(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(profile), executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1500, "height": 1000}, accept_downloads=True,
        )  # fmt: skip
        try:
            yield ctx
        finally:
            ctx.close()


def _query(params: dict[str, str | list[str]]) -> str:
    from urllib.parse import urlencode

    return "/?" + urlencode(params, doseq=True)


def _wait_for_image(page: object, method: str) -> object:
    """The fused image of ``method`` once it is on the page; fails at once on an app exception."""
    page.wait_for_selector(f".st-key-fused_{method} img, [data-testid='stException']", timeout=PAGE_TIMEOUT_MS)
    exceptions = page.locator("[data-testid='stException']")
    assert exceptions.count() == 0, exceptions.first.inner_text()
    return page.locator(f".st-key-fused_{method} img")


def _image(page: object, img: object) -> np.ndarray:
    response = page.request.get(img.get_attribute("src"))
    assert response.ok
    return np.asarray(Image.open(io.BytesIO(response.body())))


@pytest.mark.slow
def test_page_fuses_tunes_and_exports_node_parameters(server: str, context: object, tmp_path: Path) -> None:
    page = context.new_page()
    page.goto(server + _query(SCENE))

    # 1. The generated pair is fused with the default method; the time per pair is shown.
    img = _wait_for_image(page, DEFAULT_METHOD)
    before = img.get_attribute("src")
    first = _image(page, img)
    assert first.shape == (256, 320, 3)
    page.wait_for_selector(f".st-key-time_{DEFAULT_METHOD}")
    assert "ms / pair on cpu" in page.locator(f".st-key-time_{DEFAULT_METHOD}").inner_text()

    # 2. A widget change re-fuses: one pyramid level fewer (keyboard on the slider's thumb; one
    #    step, so one rerun and no intermediate image to race with).
    thumb = page.locator(f".st-key-opt__{DEFAULT_METHOD}__levels input[type='range']")
    assert thumb.input_value() == "5"
    thumb.focus()
    thumb.press("ArrowLeft")
    page.wait_for_function(
        "([sel, old]) => { const i = document.querySelector(sel); return i !== null && i.src !== old; }",
        arg=[f".st-key-fused_{DEFAULT_METHOD} img", before], timeout=PAGE_TIMEOUT_MS,
    )  # fmt: skip
    assert thumb.input_value() == "4"
    img = _wait_for_image(page, DEFAULT_METHOD)
    second = _image(page, img)
    assert second.shape == first.shape and not np.array_equal(first, second)

    # 3. "Export settings" downloads the node's parameters file with the tuned value.
    page.wait_for_function(
        "() => { const c = document.querySelector('.st-key-export_yaml'); return c !== null && c.innerText.includes('levels: 4'); }",
        timeout=PAGE_TIMEOUT_MS,
    )
    with page.expect_download(timeout=PAGE_TIMEOUT_MS) as download:
        page.locator(".st-key-export_download button").click()
    saved = tmp_path / "fusion_params.yaml"
    download.value.save_as(saved)
    text = saved.read_text()
    section = yaml.safe_load(text)["/**/fusion_node"]["ros__parameters"]  # applies in any namespace
    assert section["method"] == DEFAULT_METHOD and section[DEFAULT_METHOD]["levels"] == 4

    # 4. It round-trips into the node's parameters: its own validation, and the method's options.
    flat = logic.parse_params_yaml(text)
    node = build_config({**{p.name: p.default for p in parameter_table()}, **flat, "device": "cpu"}, check_available=False)
    assert node.method == DEFAULT_METHOD and node.options.levels == 4

    # 5. What the page shows is what a Fuser with those settings computes.
    thermal, visible = render_pair(3.0, 256, 320, 0)
    expected = Fuser.from_config(node)(thermal, visible)
    assert np.array_equal(second, expected)

    # 6. The other way: importing a parameters file sets the widgets, and the page fuses with it.
    section[DEFAULT_METHOD]["levels"] = 7
    section["thermal"]["invert"] = True
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump({"fusion_node": {"ros__parameters": section}}))
    before = img.get_attribute("src")
    page.locator(".st-key-import_yaml input[type='file']").set_input_files(str(edited))
    page.wait_for_function(
        "([sel, old]) => { const i = document.querySelector(sel); return i !== null && i.src !== old; }",
        arg=[f".st-key-fused_{DEFAULT_METHOD} img", before], timeout=PAGE_TIMEOUT_MS,
    )  # fmt: skip
    assert thumb.input_value() == "7"
    assert page.locator(".st-key-node__thermal_invert input[type='checkbox']").is_checked()
    imported = _image(page, _wait_for_image(page, DEFAULT_METHOD))
    node = build_config({**{p.name: p.default for p in parameter_table()}, **logic.parse_params_yaml(edited.read_text()), "device": "cpu"})
    expected = Fuser.from_config(node)(thermal, visible)
    assert node.options.levels == 7 and node.thermal.invert
    assert np.array_equal(imported, expected)

    if os.environ.get("FUSION_ROS_UPDATE_SCREENSHOT") == "1":
        _screenshot(context, server)


def _screenshot(context: object, server: str) -> None:
    """The README picture: the default and a baseline on a 640x512 street, zoomed on a pedestrian."""
    page = context.new_page()
    page.set_viewport_size({"width": 1600, "height": 1900})
    page.goto(server + _query({"scene_t": "3.0", "methods": [DEFAULT_METHOD, "average"], "zoom": "4", "zoom_x": "0.7", "zoom_y": "0.55"}))
    _wait_for_image(page, DEFAULT_METHOD)
    _wait_for_image(page, "average")
    page.wait_for_selector(".st-key-metrics_table", timeout=PAGE_TIMEOUT_MS)
    time.sleep(1.5)  # let the last images and the table paint
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    page.close()
