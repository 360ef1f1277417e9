# The few verbs people type. Every target creates or reuses .venv idempotently.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU wheel. GPU hosts: install your CUDA torch into .venv first (see README).
TORCH_SPEC ?= torch==2.13.0
PORT ?= 3000
DATA ?= ../shared/data/banking77

export BENTOML_DO_NOT_TRACK := true
export HF_HUB_OFFLINE ?= 1
# The quick start serves an example label set unless one is configured.
ifeq ($(LIVETUNE_LABELS)$(LIVETUNE_LABELS_FILE),)
serve build: export LIVETUNE_LABELS_FILE := examples/support_labels.txt
endif

.PHONY: setup serve test lint bench bench-online build clean

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

lint: $(STAMP)
	$(VENV)/bin/ruff check service training tests benchmarks
	$(VENV)/bin/ruff format --check service training tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_predict.py --data $(DATA)
	$(PY) benchmarks/bench_feedback.py --data $(DATA)
	$(PY) benchmarks/bench_training.py --data $(DATA)
	$(PY) benchmarks/bench_swap.py

# The learning curve through the real service, as in the README (20-40 min on 2 CPU
# cores; ONLINE_ARGS adds options, the README has the short --quick run).
bench-online: $(STAMP)
	$(PY) benchmarks/online.py --data $(DATA) --set VALIDATION_PERCENT=10 $(ONLINE_ARGS)

build: $(STAMP)
	$(VENV)/bin/bentoml build

clean:
	rm -rf $(VENV) livetune-data
