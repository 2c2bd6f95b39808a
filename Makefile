# The two commands: `make run` (the whole system on the embedded default) and `make test`.
# Everything runs from .venv/, which the first target that needs it creates.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements

.PHONY: run test test-pg faults faults-short bench bench-quick bench-plots bench-report bench-tools migrate superuser lint typecheck deploy-check clean services-start services-stop

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

## deploy-check: `manage.py check --deploy`, warnings fatal, with production variables and nothing
## else (DEBUG off, a random secret key, a host name, PostgreSQL + Redis URLs on hosts that never
## resolve: the check opens no connection)
DEPLOY_CONTEXTS := orders customers sagas eventlog readmodels
deploy-check: $(STAMP)
	env -i PATH="$$PATH" VAR_DIR="$(CURDIR)/var/deploy-check" DJANGO_SETTINGS_MODULE=config.settings \
	  DJANGO_DEBUG=false DJANGO_ALLOWED_HOSTS=saga.example.com \
	  DJANGO_SECRET_KEY="$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(50))')" \
	  DATABASE_URL=postgres://saga:secret@db.invalid:5432/saga_default \
	  $(foreach c,$(DEPLOY_CONTEXTS),$(shell echo $(c) | tr a-z A-Z)_DATABASE_URL=postgres://saga:secret@db.invalid:5432/saga_$(c)) \
	  CELERY_BROKER_URL=redis://redis.invalid:6379/0 CACHE_URL=redis://redis.invalid:6379/1 \
	  $(PY) manage.py check --deploy --fail-level WARNING

## typecheck: mypy over the project (pyproject.toml: a baseline everywhere, strict on the domain
## modules and the saga engine)
typecheck: $(STAMP)
	$(PY) -m mypy

## bench: every benchmark (bench/all.py: append, replay, query, readyourwrites, sagas solo and
## prefork, scaling), then the plots (docs/bench/*.png) and the generated tables in the docs
bench: $(STAMP) bench-tools
	$(PY) bench/all.py

## bench-quick: every benchmark's --quick form into bench/results/quick/ (the plumbing, in minutes)
bench-quick: $(STAMP) bench-tools
	$(PY) bench/all.py --quick

## bench-plots: redraw docs/bench/*.png from bench/results/ (no benchmark runs)
bench-plots: $(STAMP)
	$(PY) bench/plots.py

## bench-report: rewrite the benchmark tables of README.md, docs/modes.md, docs/scaling.md from bench/results/
bench-report: $(STAMP)
	$(PY) bench/report.py

# bench/query.py drives the load with wrk (Debian's package), and the scripts start PostgreSQL
# through scripts/services.sh, which installs its own packages.
bench-tools:
	@command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)

services-start:
	bash scripts/services.sh start

services-stop:
	bash scripts/services.sh stop

clean:
	rm -rf var/ .pytest_cache
