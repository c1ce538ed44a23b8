# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
HASH    = $(shell cksum < pyproject.toml | cut -d' ' -f1)
HOST   ?= 127.0.0.1
PORT   ?= 8000
# What `make run` may use: PostgreSQL, BUPPLE_METRICS, BUPPLE_LOG_JSON, orjson for the per-chunk JSON.
RUN_EXTRAS = postgres,metrics,jsonlogs,fast

.PHONY: run dev test test-py test-js lint system-deps bench clean

# One stamp per set of extras, renewed when pyproject.toml changes.
$(VENV)/.installed-%-$(HASH): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11+); set PYTHON=..."; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[$*]'
	rm -f $(VENV)/.installed-$*-* && touch $@

## Serve the app under gunicorn + gevent on http://$(HOST):$(PORT) (SQLite + mock provider without keys).
run: $(VENV)/.installed-$(RUN_EXTRAS)-$(HASH)
	BIND=$(HOST):$(PORT) WEB_CONCURRENCY=$${WEB_CONCURRENCY:-1} $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

## The Flask dev server, with reload.
dev: $(VENV)/.installed-$(RUN_EXTRAS)-$(HASH)
	$(BIN)/flask --app wsgi:app run --debug --host $(HOST) --port $(PORT)

## Everything: lint and types, Python tests (fakes, real gunicorn + gevent, PostgreSQL, headless Chromium), JS tests.
test: $(VENV)/.installed-test-$(HASH) system-deps
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest
	node --test tests/js/

## ruff (style, imports, common bugs) and mypy --strict on the package.
lint: $(VENV)/.installed-test-$(HASH)
	$(BIN)/ruff check .
	$(BIN)/mypy

test-py: $(VENV)/.installed-test-$(HASH)
	$(BIN)/python -m pytest

test-js:
	node --test tests/js/

## Debian chromium for the browser tests, and the vue package for the Vue example test (ignored folder).
system-deps:
	./scripts/install-system-deps.sh

## Benchmarks (not part of `make test`): `make bench` or `make bench QUICK=1`.
bench: $(VENV)/.installed-bench-$(HASH)
	$(BIN)/python -m bench.run $(if $(filter 1 yes true,$(QUICK)),--quick,)

clean:
	rm -rf $(VENV) .pytest_cache tests/artifacts tests/.vendor build dist
