# The two commands: `make run` (the whole system on the embedded default) and `make test`.
# Everything runs from .venv/, which the first target that needs it creates.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements

.PHONY: run test test-pg faults faults-short bench migrate superuser lint clean services-start services-stop

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed, found " + sys.version.split()[0]'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

venv: $(STAMP)

## run: migrate every database and start web, workers (one per queue), beat and the broker
run: $(STAMP)
	$(PY) -m config.launcher

migrate: $(STAMP)
	$(PY) manage.py migrate_all

superuser: $(STAMP)
	$(PY) manage.py createsuperuser --database default

## test: the whole suite on whatever the environment selects (embedded default when unset)
test: $(STAMP)
	$(PY) -m pytest

## test-pg: the same suite against a private PostgreSQL + Redis (scripts/services.sh)
test-pg: $(STAMP)
	bash scripts/test-pg.sh

## faults: the fault run (tests/faults/run.py): the production processes on a private PostgreSQL + Redis,
## 1,000 orders in the three modes under every fault, then every invariant; bench/results/faults.json
faults: $(STAMP)
	$(PY) -m tests.faults

## faults-short: the same in about 2 minutes (150 orders, 10 s outages); .ci/run runs it
faults-short: $(STAMP)
	$(PY) -m tests.faults --short

## lint: ruff (pyflakes, bugbear, import order, pyupgrade) over the project
lint: $(STAMP)
	$(PY) -m ruff check config eventlog customers orders sagas readmodels tests

bench: $(STAMP)
	$(PY) bench/append.py

services-start:
	bash scripts/services.sh start

services-stop:
	bash scripts/services.sh stop

clean:
	rm -rf var/ .pytest_cache
