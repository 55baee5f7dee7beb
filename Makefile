# Quick start: `make demo` builds integration_project/ on the embedded PostgreSQL; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SOURCES := setup.py $(shell find dbt -name '*.py' -o -name '*.sql' -o -name '*.yml')

.PHONY: demo test test-server lint bench stop clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel

# a real (non-editable) install, as users get it; reinstalled without deps when the sources change
$(VENV)/.installed: $(BIN)/python $(SOURCES)
	$(BIN)/pip install --quiet '.[all,test,bench,lint]'
	$(BIN)/pip install --quiet --no-deps --force-reinstall .
	touch $@

demo: $(VENV)/.installed
	cd integration_project && ../$(BIN)/dbt build

test: $(VENV)/.installed
	$(BIN)/pytest tests

# the same suite on the machine's own PostgreSQL server (Debian's packages) instead of the embedded one
test-server: $(VENV)/.installed
	scripts/with-postgres-server.sh $(BIN)/pytest tests

# ruff (format and lint, line length 99) and mypy on the package, as CI runs them
lint: $(VENV)/.installed
	$(BIN)/ruff format --check dbt
	$(BIN)/ruff check dbt
	$(BIN)/mypy dbt/adapters/sqlflow

bench: $(VENV)/.installed
	$(BIN)/python bench/io.py

stop:
	$(BIN)/python -m dbt.adapters.sqlflow.embedded stop --project-dir integration_project

clean: stop
	rm -rf $(VENV) build *.egg-info integration_project/target integration_project/logs
