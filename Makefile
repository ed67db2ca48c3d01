# RAGsite: `make run` installs everything and serves the demo; `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 8000
STAMP  := $(VENV)/.installed

.PHONY: run worker install system-deps test lint format migrate demo serve stop-db bench clean

$(PY):
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "RAGsite needs Python 3.11+"'
	@$(PYTHON) -m venv $(VENV) || { echo "Could not create a virtualenv: on Debian, apt-get install python3-venv"; exit 1; }

$(STAMP): requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@

install: $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

migrate: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py createcachetable

demo: migrate
	$(PY) manage.py ingest --demo --if-empty

# The development server and one worker beside it (uploads are ingested by a worker); Ctrl-C
# stops both, the worker after the file it is on.
run: demo
	@echo "RAGsite on http://$(HOST):$(PORT)/ with one worker  (Ctrl-C stops both)"
	@$(PY) manage.py procrastinate worker & worker=$$!; \
	trap 'kill -TERM $$worker 2>/dev/null; wait $$worker' EXIT INT TERM; \
	$(PY) manage.py runserver $(HOST):$(PORT)

# Another worker (any number, on any machine pointed at the same database).
worker: migrate
	$(PY) manage.py procrastinate worker

# Production-style serving: gunicorn (RAGSITE_WORKERS x RAGSITE_THREADS) on RAGSITE_BIND.
serve: migrate
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py ingest --demo --if-empty
	$(VENV)/bin/gunicorn -c ragsite/gunicorn_conf.py ragsite.wsgi

test: install system-deps
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

stop-db: install
	$(PY) -c 'import pathlib; from ragsite import embedded_db; embedded_db.stop(pathlib.Path("var/pgdata"))'

clean:
	rm -rf $(VENV) var
