# pathvqa — two commands: `make demo` and `make test`. Everything else is installed on the way.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export TOKENIZERS_PARALLELISM := false
export HF_HUB_DISABLE_TELEMETRY := 1
export NO_MKDOCS_2_WARNING := 1

.PHONY: setup setup-test test test-fast lint format docs docs-serve demo bench clean gpu-check gpu-wheels hub-files

# What `make demo` needs, without root: the venv, the pinned packages, WordNet (Debian's when installed or
# installable as root, else nltk's downloader, else one line saying what to install).
setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock scripts/install_wordnet.sh
	@$(PYTHON) -c 'import sys; v = sys.version_info; sys.exit(0 if v >= (3, 11) else f"pathvqa needs Python 3.11+; $(PYTHON) is {v.major}.{v.minor}: run make setup PYTHON=python3.11 (or newer)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	# MultiMedEval's own scoring code, for the test that --protocol multimedeval equals it (its other
	# tasks' dependencies — spaCy, scikit-learn, BERTScore… — are not needed for that: none installed)
	$(BIN)/pip install -q --no-deps multimedeval==1.0.0
	bash scripts/install_wordnet.sh $(BIN)/python
	touch $(STAMP)

# What only some tests need: Debian's Chromium (the browser test) and PostgreSQL (the sweep test), installed
# when root; without them those tests are skipped or fail naming what to install.
TEST_STAMP := $(VENV)/.installed-test
setup-test: $(TEST_STAMP)

$(TEST_STAMP): $(STAMP) scripts/install_chromium.sh scripts/install_postgresql.sh
	bash scripts/install_chromium.sh
	bash scripts/install_postgresql.sh
	touch $(TEST_STAMP)

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

format: setup
	$(BIN)/ruff check --fix src tests benchmarks scripts
	$(BIN)/ruff format src tests benchmarks scripts

test: setup setup-test lint docs
	$(BIN)/python -m pytest -q -m "not gpu" $(PYTEST_ARGS)

# The tests that take seconds, not minutes (no learning bars, multi-process runs, browsers): the edit loop.
test-fast: setup setup-test lint
	$(BIN)/python -m pytest -q -m "not slow and not gpu" $(PYTEST_ARGS)

# The documentation site (MkDocs Material), built with --strict: a broken link or a stale generated page
# (config, command, reward and protocol references; tables from docs/results/) fails.
docs: setup
	$(BIN)/python scripts/docs.py --check
	$(BIN)/mkdocs build --strict --quiet --site-dir site

docs-serve: setup
	$(BIN)/python scripts/docs.py
	$(BIN)/mkdocs serve

demo: setup
	$(BIN)/pathvqa demo $(DEMO_ARGS)

# Speed against a plain transformers Trainer and a per-question generate loop; data-loading growth.
bench: setup
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

# The non-weight files (configs, processors, tokenizers, chat templates) of the real models that
# tests/test_hub_models.py proves offline, into .hub-cache/hub (a Hugging Face cache, ignored by git): the
# test reads it first, ../shared/hub-cache/hub second. Needs the hub; no weights are downloaded.
HUB_FILES := .hub-cache/hub
HUB_MODELS := Qwen/Qwen2.5-VL-3B-Instruct Qwen/Qwen2.5-VL-7B-Instruct llava-hf/llava-1.5-7b-hf \
	mistralai/Mistral-7B-Instruct-v0.3 microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224 \
	microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract
hub-files: setup
	for id in $(HUB_MODELS); do \
	  $(BIN)/hf download $$id --cache-dir $(HUB_FILES) --include "*.json" --include "*.jinja" \
	    --include "*.txt" --include "*.model" --include "tokenizer*" || exit 1; \
	done
	@echo "non-weight files of $(words $(HUB_MODELS)) models in $(HUB_FILES) (HF_HUB_CACHE=$(HUB_FILES) HF_HUB_OFFLINE=1)"

clean:
	rm -rf $(VENV) runs site .pytest_cache .ruff_cache

# GPU machine (not part of `make test`): its own torch, plus the wheels it lacks from .whl/.
gpu-check:
	bash scripts/gpu_check.sh

# Wheels the GPU machine lacks (Python 3.12, x86-64), fetched here into the ignored .whl/
GPU_WHEELS := bitsandbytes==0.50.2 transformers==5.24.0 pydantic==2.14.4 pydantic_core==2.50.5 \
	annotated-types==0.8.0 typing-inspection==0.4.5
gpu-wheels:
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
	  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl $(GPU_WHEELS)
	du -sh .whl
