# Two commands a user needs: `make demo` and `make test`. Each makes .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean mutate

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[simulator,test]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python scripts/run_demo.py

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) demo-output .airflow-demo mutants

# -- Mutation testing of the money paths (docs/mutation.md); not part of `make test` -----------------
# mutmut mutates the modules [tool.mutmut] names and runs, per mutant, only the tests of tests/unit and
# tests/integration that reached the mutated function, fastest first, stopping at the first failure.
# A fresh run each time: results cached from older tests would hide what a new test kills.
# Six children on two cores: the tests mostly wait on sockets and timers (the suite uses about 40 s
# of CPU in 230 s). Six copies of the suite side by side pass, bar the batch scenarios, which are
# not run here.
MUTATE_CHILDREN ?= 6

mutate: $(BIN)/.installed
	rm -rf mutants
	$(BIN)/mutmut run --max-children $(MUTATE_CHILDREN)
	$(BIN)/python scripts/mutation_score.py

# -- A real Airflow, packaging and the version matrix (tests/e2e; CI runs all of it) -----------------
# `make e2e` starts api-server, scheduler, dag-processor and triggerer on loopback and drives them
# over REST and in headless Chromium (Debian's chromium). `make package-check` builds and checks the
# wheel and sdist. `make test-lowest` runs the suite on the lowest Airflow pyproject.toml declares.
# psycopg2 and asyncpg: the sync and async drivers Airflow 3 needs for EACHLABS_E2E_DB=postgres.
# The Celery provider (3.26) imports celery.backends.database.retry, which Celery 5.7 removed.
E2E_PACKAGES := playwright build twine psycopg2-binary asyncpg apache-airflow-providers-celery "celery<5.7"
LOWEST_AIRFLOW := $(shell sed -n 's/.*"apache-airflow>=\([0-9.]*\)".*/\1/p' pyproject.toml)
LOWEST_VENV := build/venv-airflow-$(LOWEST_AIRFLOW)
# Airflow 3.2.0 caps neither FastAPI nor cadwyn; FastAPI 0.137+ breaks its Execution API routes
# (3.3 caps fastapi<0.137 itself). Only the lowest-version venv needs these pins.
LOWEST_PINS := "fastapi<0.137" "cadwyn<8"

.PHONY: e2e-deps e2e package-check screenshots test-lowest

e2e-deps: $(BIN)/.installed
	$(BIN)/pip install --quiet $(E2E_PACKAGES)

e2e: e2e-deps
	$(BIN)/pytest -q tests/e2e

package-check: e2e-deps
	$(BIN)/pytest -q tests/e2e/test_packaging.py

screenshots: e2e-deps
	EACHLABS_E2E_SCREENSHOTS=docs/screenshots $(BIN)/pytest -q tests/e2e/test_browser.py

$(LOWEST_VENV)/bin/.installed: pyproject.toml
	test -x $(LOWEST_VENV)/bin/python || $(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/pip install --quiet --upgrade pip
	$(LOWEST_VENV)/bin/pip install --quiet "apache-airflow==$(LOWEST_AIRFLOW)" $(LOWEST_PINS) -e ".[simulator,test]" playwright
	touch $@

test-lowest: $(LOWEST_VENV)/bin/.installed
	$(LOWEST_VENV)/bin/python -c "import airflow; print('Airflow', airflow.__version__)"
	$(LOWEST_VENV)/bin/pytest -q tests/unit tests/simulator tests/integration tests/dags tests/e2e/test_real_airflow.py tests/e2e/test_ui_plugin.py \
		tests/e2e/test_browser.py
