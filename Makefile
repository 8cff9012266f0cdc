# The two commands a new user needs: `make serve` and `make test`.
# Both bootstrap .venv (if missing or out of date) from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint proto bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/herald serve

test: $(STAMP)
	$(BIN)/python -m pytest -q

# ruff, then mypy over the files that pyproject's [tool.mypy] names (all of the code but the
# generated collector/_proto).
lint: $(STAMP)
	$(BIN)/ruff check collector cli tests benchmarks examples
	$(BIN)/mypy

# Regenerate collector/_proto from proto/ (generated code is checked in).
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. proto/collector/_proto/herald.proto proto/collector/_proto/automations.proto

clean:
	rm -rf $(VENV) .pytest_cache
