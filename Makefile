# The two set-up commands of the README: `make demo` and `make test`.
# Each builds the virtual environment (.venv) from pyproject.toml when it is missing or stale.

PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test,ramp,cluster]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/datarun demo

# pytest exits 5 when it collects no test: make treats that as a failure, as it should.
test: $(STAMP)
	bash scripts/setup-test-env.sh
	$(VENV)/bin/python -m pytest

bench: $(STAMP)
	for b in bench/*.py; do $(VENV)/bin/python $$b || exit 1; done

lint: $(STAMP)
	$(VENV)/bin/ruff check datarun tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m mypy --config-file pyproject.toml

clean:
	rm -rf $(VENV) build dist *.egg-info
