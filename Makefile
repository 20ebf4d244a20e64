# The fine-tuning kit: `make lab` to learn, `make test` to check. Everything installs into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is installed on its own first: a plain `pip install torch` on Linux pulls a large CUDA
# build. Keep an installed torch (CPU or CUDA); otherwise install this version, from TORCH_INDEX
# if given (see README: GPU users pick their CUDA wheel index there).
TORCH_VERSION ?= 2.13.0
TORCH_INDEX   ?=
STAMP  := $(VENV)/.installed
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1

.PHONY: install lab test lint unit notebooks pretrain bench clean class-ready doctor

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	@$(BIN)/python -c "import torch" 2>/dev/null && echo "torch already installed: keeping it" || \
	  $(BIN)/python -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

# JupyterLab refuses to run as root unless told (containers, some lab machines)
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: install
	$(BIN)/jupyter lab --notebook-dir=notebooks $(ROOT_FLAG)

lint: install
	$(BIN)/ruff check kit tests bench notebooks solutions
	$(BIN)/lint-imports

unit: install
	$(OFFLINE) $(BIN)/python -m pytest -q --ignore=tests/test_notebooks.py

notebooks: install
	$(OFFLINE) KIT_PROFILE=smoke $(BIN)/python -m pytest -q tests/test_notebooks.py

test: lint
	$(OFFLINE) $(BIN)/python -m pytest -q

pretrain: install
	$(OFFLINE) $(BIN)/python -m kit pretrain

# Before class: build every artefact, run every notebook headless, time them, check the figures against
# bench/expected.json, write executed HTML copies to $(KIT_CACHE or .cache)/reference/. Exits 1 with what to do.
PROFILE ?= classroom
class-ready: install
	$(OFFLINE) $(BIN)/python bench/course.py --profile $(PROFILE)

# Is this machine ready? Runs without the install step, so that it can diagnose a broken one.
doctor:
	@$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) -m kit.doctor

clean:
	rm -rf .cache .pytest_cache .ruff_cache
