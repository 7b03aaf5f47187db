# One entry point per task, the same locally and in CI.
VENV ?= .venv
BIN := $(VENV)/bin
# mkdocs-material prints a banner about its successor on every build: not ours to act on.
export NO_MKDOCS_2_WARNING := 1

.PHONY: install demo test lint docs docs-build bench serve chromium

$(BIN)/python:
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The demo needs eventfold with the example's extra, not the development toolchain.
$(VENV)/.example: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[example]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.example

install: $(VENV)/.dev

demo: $(VENV)/.example
	$(BIN)/python -m examples.shop

lint: install
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks
	$(BIN)/mypy --strict src
	$(BIN)/mypy --strict examples  # the example is a user's code: it must type-check too
	$(BIN)/lint-imports

docs-build: install
	$(BIN)/mkdocs build --strict

# The admin page's browser tests drive Debian's Chromium through Playwright, never a
# browser Playwright would download.
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update && apt-get install -y chromium)

# A transaction stays open in another database for the whole run (when PostgreSQL
# answers): the PostgreSQL tests prove the log stays live beside it.
test: lint docs-build chromium
	EVENTFOLD_TEST_HOLD_TRANSACTION=1 $(BIN)/pytest -p no:cacheprovider

docs: install
	$(BIN)/mkdocs serve

bench: install
	$(BIN)/python -m benchmarks

serve: $(VENV)/.example
	$(BIN)/uvicorn examples.shop.api:app
