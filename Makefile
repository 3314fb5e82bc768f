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
export ORT_DISABLE_TELEMETRY := 1

.PHONY: run index watch test check lint bench tiny-clip browser strace screenshot stress-outages clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e .
	touch $@

# CocoIndex sends a usage report from the moment it is imported, unless COCOINDEX_DISABLE_USAGE_TRACKING
# is set by then, and `cocoindex update main.py` imports it before main.py or .env could set it. A .pth
# file runs whenever the venv's interpreter starts: .venv/bin/cocoindex sends nothing either (nor does
# onnxruntime, nor Hugging Face; see core/privacy.py).
$(VENV)/.no-usage-reports: no-usage-reports.pth $(VENV)/.installed
	cp no-usage-reports.pth "$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/sightline-no-usage-reports.pth"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[test]"
	touch $@

run: $(VENV)/.no-usage-reports
	$(PY) main.py serve

index: $(VENV)/.no-usage-reports
	$(PY) main.py index

watch: $(VENV)/.no-usage-reports
	$(PY) main.py watch

tests/fixtures/tiny-clip/model.safetensors:
	$(PY) tests/make_tiny_clip.py

tiny-clip: $(VENV)/.installed
	$(PY) tests/make_tiny_clip.py

# a Debian package, as root or through sudo
APT_INSTALL = if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; \
	else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; fi

# Debian's Chromium for the browser tests (Playwright cannot download its own browser here).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { $(call APT_INSTALL,chromium); }

# The test that watches every documented command for network traffic sees system calls (tests/netwatch.py).
strace:
	@command -v strace >/dev/null 2>&1 || { $(call APT_INSTALL,strace); }

test: $(VENV)/.installed-test $(VENV)/.no-usage-reports tests/fixtures/tiny-clip/model.safetensors browser strace
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --ignore=tests/test_outages.py --ignore=tests/test_outage_stress.py
	@# the outage tests time an indexer's recovery: alone, not beside three other workers (issue 28)
	$(PY) -m pytest -q tests/test_outages.py tests/test_outage_stress.py

# Twenty outages of 1-10 s each at random moments against one running server (a few minutes; the
# suite runs them at 1-2 s). OUTAGE_SEED=N replays a run's moments, OUTAGE_COUNT=N sets how many,
# OUTAGE_SERVER=embedded takes down Sightline's own server (which Sightline starts again itself).
OUTAGE_SECONDS ?= 1-10
stress-outages: $(VENV)/.installed-test tests/fixtures/tiny-clip/model.safetensors
	OUTAGE_SECONDS=$(OUTAGE_SECONDS) $(PY) -m pytest -q -s tests/test_outage_stress.py

# The wide fuzz of the HTTP API (about 2 minutes on 2 cores): tests/test_openapi.py, which `make test`
# runs with 8 schemathesis cases per operation, with OPENAPI_EXAMPLES of them (OPENAPI_SEED=N for others)
OPENAPI_EXAMPLES ?= 100
check: $(VENV)/.installed-test tests/fixtures/tiny-clip/model.safetensors
	OPENAPI_EXAMPLES=$(OPENAPI_EXAMPLES) $(PY) -m pytest -q tests/test_openapi.py

lint: $(VENV)/.installed-test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

# The real benchmark (minutes), with a randomly initialised ViT-B/32 so it runs offline; a real model:
# BENCH_ARGS="--model openai/clip-vit-base-patch32", a real corpus: "--corpus ../shared/data/coco-mini"
BENCH_ARGS ?= --random-weights ViT-B/32
bench: $(VENV)/.installed-test $(VENV)/.no-usage-reports
	$(PY) -m bench $(BENCH_ARGS)

# The README's picture: the real server over a temporary library of coco-mini photos, in Chromium
screenshot: $(VENV)/.installed-test $(VENV)/.no-usage-reports tests/fixtures/tiny-clip/model.safetensors browser
	$(PY) docs/make_screenshot.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts
