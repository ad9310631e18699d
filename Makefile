# Two commands do all the set-up (see README): `make serve` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mlsrv-installed
EXAMPLE := $(CURDIR)/examples/models/half_plus_two

.PHONY: serve test lint docs bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Serve the bundled example model (REST :8501, gRPC :8500).
serve: $(STAMP)
	$(BIN)/mlsrv serve --model_name=half_plus_two --model_base_path=$(EXAMPLE)

## The whole test suite: lint (ruff), types (mypy --strict on src), tests. .ci/run calls exactly this.
test: $(STAMP)
	scripts/install_tools.sh
	$(BIN)/ruff check src tests bench examples scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

## Regenerate completions/ and man/ from the CLI.
docs: $(STAMP)
	$(BIN)/python scripts/gen_docs.py
