# The README's two commands are `make run` and `make test`; CI runs `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck pytest bench clean

# Installs into .venv only when pyproject.toml changed since the last install.
$(BIN)/.installed-run: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[embedded]'
	touch $@

$(BIN)/.installed-dev: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev]'
	touch $(BIN)/.installed-run $@

# --demo: on a database that never had it, load the demo data once the server is ready.
run: $(BIN)/.installed-run
	$(BIN)/kindred serve --demo

test: lint typecheck pytest

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed-dev
	$(BIN)/mypy

pytest: $(BIN)/.installed-dev
	$(BIN)/pytest

$(BIN)/.installed-bench: $(BIN)/.installed-dev
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev,bench]'
	touch $@

bench: $(BIN)/.installed-bench
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
