# The README's two commands are `make run` and `make test`; CI runs `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck pytest chromium bench clean

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

pytest: $(BIN)/.installed-dev chromium
	$(BIN)/pytest

# The admin console's browser tests drive Debian's chromium through Playwright;
# `playwright install` is not used (it downloads from the internet). As root with
# apt-get this installs the package when it is missing; otherwise it says so and
# carries on, and those tests skip with a warning naming what is missing.
CHROMIUM ?= /usr/bin/chromium
chromium:
	@if [ -x "$(CHROMIUM)" ]; then \
		:; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "Installing Debian's chromium for the admin console's browser tests (apt-get)"; \
		( apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends chromium ) \
		|| echo "*** NOTICE: apt-get could not install chromium; the browser tests will skip. ***"; \
	else \
		echo "*** NOTICE: $(CHROMIUM) is missing and cannot be installed here (it needs root"; \
		echo "*** and apt-get: sudo apt-get install --no-install-recommends chromium)."; \
		echo "*** The admin console's browser tests will skip."; \
	fi

$(BIN)/.installed-bench: $(BIN)/.installed-dev
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev,bench]'
	touch $@

bench: $(BIN)/.installed-bench
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
