# predcache: `make demo` runs it on this machine, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The Pulumi program and its tests get their own venv: pulumi needs protobuf<7, the app pins protobuf 7.
INFRA_VENV := infra/.venv
INFRA_STAMP := $(INFRA_VENV)/.installed

.PHONY: demo test test-infra lint format bench clean chromium

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

# The browser tests drive Debian's chromium (never a downloaded browser). Where it is missing and
# root can install it, do so quietly; where not, the run goes on and those tests skip saying why.
chromium:
	@if [ ! -x /usr/bin/chromium ] && [ -z "$$PREDCACHE_CHROMIUM" ] && [ "$$(id -u)" = 0 ] \
		&& command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the browser tests"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
			>/dev/null 2>&1 || echo "could not install chromium: the browser tests will be skipped"; \
	fi

test: $(STAMP) $(INFRA_STAMP) chromium
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

# Every benchmark in bench/, about eight minutes on 2 cores: tables on the terminal, bench/RESULTS.md
# and the plots in bench/results/ (bench/run_all.py).
bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) $(INFRA_VENV) var .pytest_cache .mypy_cache .ruff_cache
