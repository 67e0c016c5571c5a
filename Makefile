# Two entry points on a fresh machine: `make app` (the guided Voila app on the sample project)
# and `make test` (everything the tests need, then the tests). Both create .venv as needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8866

.PHONY: setup system-deps app demo test test-fast benchmarks clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch and torchvision first, pinned, so nothing pulls another build.
	$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install --quiet -e ".[dev]"
	# bioimageio.core 0.11 pins bioimageio.spec 0.5.12, whose packaging fails under pydantic >= 2.14
	# ("'index_key' is expected to be an integer or a string"); spec 0.5.14 fixes it and core runs on it.
	$(PY) -m pip install --quiet --no-deps "bioimageio.spec==0.5.14.3"
	touch $@

# Debian's Chromium drives the real-browser tests (Playwright cannot download browsers here).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

app: setup
	$(PY) -m workbench_widgets.launch --project sample-project --port $(PORT)

demo: setup
	$(VENV)/bin/workbench demo --force

test: setup system-deps
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: setup
	$(PY) -m pytest -q -m "not browser and not slow"

benchmarks: setup
	$(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) demo-output sample-project
