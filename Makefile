# Everything runs inside a local virtual environment made here.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_CONFIG ?= configs/plain_mobilenetv2_camvid_256x320_800.yaml
# Test-time augmentation of the final validation (flip, 0.75 / 1 / 1.25 x the size): +0.9 mIoU
# on the demo's model, 3 seeds (docs/research/results.md, "Accuracy per CPU-minute"); DEMO_OVERRIDES= for none.
DEMO_OVERRIDES ?= eval.flip=true 'eval.scales=[0.75,1.0,1.25]'

.PHONY: setup browser demo test lint docs docs-serve clean gpu-check-prepare gpu-check

setup: $(STAMP)

# The exact torch the suite runs on (pyproject.toml accepts a range), then clipfuse with every
# extra (clipfuse.extras: train, clip, serve, export, bench) and the dev tools.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/clipfuse data download camvid --if-missing
	$(BIN)/clipfuse train --config $(DEMO_CONFIG) --out runs/demo-$$(date +%Y%m%d-%H%M%S) $(DEMO_OVERRIDES)

# Debian's Chromium for the web demo's browser test (skipped, with a reason, where absent outside CI).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "note: could not install chromium: the browser test will be skipped outside CI"

test: $(STAMP) browser
	$(BIN)/ruff check src tests tools docs/scripts
	$(BIN)/pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check --fix src tests tools docs/scripts
	$(BIN)/ruff format src tests tools docs/scripts

# The documentation site (mkdocs.yml): built strictly into site/, or served with live reload.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

docs-serve: $(STAMP)
	$(BIN)/mkdocs serve

# The GPU device check (tools/gpu_check.py): prepare here, then run on a machine with a GPU.
gpu-check-prepare: $(STAMP)
	$(BIN)/python tools/gpu_check.py prepare

gpu-check:
	bash tools/gpu_check.sh

clean:
	rm -rf $(VENV) runs site .gpu-check gpu-check-out
