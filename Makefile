# The two commands: `make run` (the demo) and `make test` (the whole suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
DEPS := $(VENV)/.deps-installed
FLASK := $(PY) -m flask --app wsgi

.PHONY: run test test-fast test-slow install db demo-data browser lint fmt bench bench-quick \
        translations-extract translations-update translations-compile clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(DEPS): requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(DEPS)

## run: the app with demo data, localstripe and a local mail server (Ctrl-C stops all)
run: $(DEPS) translations-compile
	$(FLASK) db upgrade
	$(FLASK) demo-data
	$(PY) -m fundraiser.dev.stack

## test: install what the tests need and run the whole suite
test: $(DEPS) browser translations-compile
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(DEPS) translations-compile
	$(PY) -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

test-slow: $(DEPS) browser translations-compile
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

## browser: Debian's chromium and axe-core for the browser tests (installed when missing)
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-core >/dev/null; \
	  else \
	    echo "the browser tests need Debian's chromium: sudo apt-get install chromium"; \
	  fi; \
	fi
	@if [ ! -f node_modules/axe-core/axe.min.js ]; then \
	  if ! command -v npm >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's npm for the accessibility checker"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; \
	  fi; \
	  echo "installing axe-core (package-lock.json) for the accessibility checks"; \
	  npm ci --no-audit --no-fund --loglevel=error; \
	fi

## bench: every benchmark against its floor (under 15 minutes); bench-quick: smaller, for CI
bench: $(DEPS)
	$(PY) -m bench.run

bench-quick: $(DEPS)
	$(PY) -m bench.run --quick

db: $(DEPS)
	$(FLASK) db upgrade

demo-data: db
	$(FLASK) demo-data

lint: $(DEPS)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: $(DEPS)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## translations: extract strings, update catalogs, compile them
translations-extract: $(DEPS)
	$(VENV)/bin/pybabel extract -F babel.cfg -k _l -k lazy_gettext -o translations/messages.pot .

translations-update: translations-extract
	$(VENV)/bin/pybabel update -i translations/messages.pot -d translations

translations-compile: $(DEPS)
	@if ls translations/*/LC_MESSAGES/messages.po >/dev/null 2>&1; then \
	  $(VENV)/bin/pybabel -q compile -d translations; fi

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache
