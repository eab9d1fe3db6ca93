# The two commands of the README:  `make demo` (set up + run the main job)  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEPS   := $(VENV)/.deps-installed
PKG    := $(VENV)/.pkg-installed
# A regular (not editable) install, so share/fusion_ros (launch, config, ament marker) and
# lib/fusion_ros (ros2 run / launch_ros executables) exist in the venv as in a ROS install.
SOURCES := setup.py setup.cfg package.xml $(wildcard fusion_ros/*.py fusion_ros/*/*.py fusion_ros/*/*/*.py launch/* config/* weights/manifest.toml resource/lib/*)

.PHONY: setup demo test bench clean

setup: $(PKG)

$(DEPS): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(PKG): $(DEPS) $(SOURCES)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --force-reinstall .
	rm -rf build
	touch $@

demo: $(PKG)
	$(VENV)/bin/fusion-ros demo

test: $(PKG)
	sh test/browser_setup.sh
	$(PY) -m pytest -q test

bench: $(PKG)
	$(VENV)/bin/fusion-ros bench

clean:
	rm -rf $(VENV) build install log *.egg-info
