#!/bin/sh
# Installs the headless browser of the UI test (test/test_ui_browser.py): Debian's chromium and
# chromium-driver. Idempotent and quiet: does nothing when both are there. Needs root (or sudo) and
# apt; anywhere else it says why and exits 0, and the browser test skips with that reason.
set -eu

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "browser_setup: no apt-get here; install chromium + chromium-driver yourself (the UI browser test skips until then)" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "browser_setup: not root and no password-less sudo; install chromium + chromium-driver yourself (the UI browser test skips until then)" >&2
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver; } >/tmp/fusion_ros_browser_setup.log 2>&1; then
    echo "browser_setup: apt-get install chromium chromium-driver failed (see /tmp/fusion_ros_browser_setup.log); the UI browser test will skip" >&2
fi
exit 0
