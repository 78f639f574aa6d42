# predcache: `make demo` runs it on this machine, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The Pulumi program and its tests get their own venv: pulumi needs protobuf<7, the app pins protobuf 7.
INFRA_VENV := infra/.venv
INFRA_STAMP := $(INFRA_VENV)/.installed

.PHONY: demo test test-infra lint format bench clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

$(INFRA_STAMP): infra/requirements.txt infra/requirements-dev.txt
	test -x $(INFRA_VENV)/bin/python || $(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(INFRA_VENV)/bin/python -m pip install --quiet -r infra/requirements-dev.txt
	touch $(INFRA_STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

test: $(STAMP) $(INFRA_STAMP)
	$(BIN)/python -m pytest
	$(INFRA_VENV)/bin/python -m pytest tests/infra
	$(MAKE) --no-print-directory lint

test-infra: $(INFRA_STAMP)
	$(INFRA_VENV)/bin/python -m pytest tests/infra

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/hit_path.py

clean:
	rm -rf $(VENV) $(INFRA_VENV) var .pytest_cache .mypy_cache .ruff_cache
