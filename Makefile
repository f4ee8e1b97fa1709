# Everything runs inside a local virtual environment made here.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_CONFIG ?= configs/convformer_mobilenetv2_camvid_192x256_160.yaml

.PHONY: setup demo test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/clipfuse data download camvid --if-missing
	$(BIN)/clipfuse train --config $(DEMO_CONFIG) --out runs/demo-$$(date +%Y%m%d-%H%M%S)

test: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

clean:
	rm -rf $(VENV) runs
