# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build; an unpinned torch pulls several GB of CUDA packages.
TORCH_SPEC ?= torch==2.13.0
# Extra pip arguments for torch alone. Empty here; the Dockerfile passes PyTorch's CPU index,
# because PyPI's Linux torch is the CUDA build.
TORCH_PIP_ARGS ?=
# the suite's parallel workers (pytest-xdist, one file per worker at a time, each with its own
# embedded Postgres): its tests wait on servers, browsers and subprocesses as much as they compute
TEST_WORKERS ?= 3
export COCOINDEX_DISABLE_USAGE_TRACKING := 1
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: run index watch test lint bench tiny-clip browser screenshot clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[test]"
	touch $@

run: $(VENV)/.installed
	$(PY) main.py serve

index: $(VENV)/.installed
	$(PY) main.py index

watch: $(VENV)/.installed
	$(PY) main.py watch

tests/fixtures/tiny-clip/model.safetensors:
	$(PY) tests/make_tiny_clip.py

tiny-clip: $(VENV)/.installed
	$(PY) tests/make_tiny_clip.py

# Debian's Chromium for the browser tests (Playwright cannot download its own browser here).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	    else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi; }

test: $(VENV)/.installed-test tests/fixtures/tiny-clip/model.safetensors browser
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --ignore=tests/test_outages.py
	@# the outage tests time an indexer's recovery: alone, not beside three other workers (issue 28)
	$(PY) -m pytest -q tests/test_outages.py

lint: $(VENV)/.installed-test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

# The real benchmark (minutes), with a randomly initialised ViT-B/32 so it runs offline; a real model:
# BENCH_ARGS="--model openai/clip-vit-base-patch32", a real corpus: "--corpus ../shared/data/coco-mini"
BENCH_ARGS ?= --random-weights ViT-B/32
bench: $(VENV)/.installed-test
	$(PY) -m bench $(BENCH_ARGS)

# The README's picture: the real server over a temporary library of coco-mini photos, in Chromium
screenshot: $(VENV)/.installed-test tests/fixtures/tiny-clip/model.safetensors browser
	$(PY) docs/make_screenshot.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts
