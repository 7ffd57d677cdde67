# djangoscope: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test
# The oldest supported Django: the whole suite runs on it too (`make test-django42`).
VENV42 ?= .venv-django42
STAMP42 := $(VENV42)/.installed-test
export QT_QPA_PLATFORM ?= offscreen
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test test-django52 test-django42 lint install bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/djangoscope demo --headless

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

$(STAMP42): pyproject.toml
	test -x $(VENV42)/bin/python || $(PYTHON) -m venv $(VENV42)
	$(VENV42)/bin/python -m pip install -q --upgrade pip
	$(VENV42)/bin/python -m pip install -q "Django>=4.2,<5.0" -e ".[test]"
	touch $(STAMP42)

test: lint test-django52 test-django42

test-django52: $(STAMP)
	$(BIN)/pytest

test-django42: $(STAMP42)
	$(VENV42)/bin/python -c "import django; assert django.VERSION[:2] == (4, 2), django.VERSION"
	$(VENV42)/bin/pytest

bench: $(STAMP)
	$(BIN)/python bench/probe_overhead.py

clean:
	rm -rf $(VENV) $(VENV42) build dist *.egg-info .pytest_cache .ruff_cache
