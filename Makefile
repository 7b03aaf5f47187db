# One entry point per task, the same locally and in CI.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint bench serve

$(BIN)/eventfold: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/eventfold

demo: install
	$(BIN)/python -m examples.shop

lint: install
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks
	$(BIN)/mypy --strict src
	$(BIN)/mypy --strict examples  # the example is a user's code: it must type-check too
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest -p no:cacheprovider

bench: install
	$(BIN)/python -m benchmarks

serve: install
	$(BIN)/uvicorn examples.shop.api:app
