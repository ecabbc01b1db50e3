# Every target sets up .venv itself: a fresh clone needs only python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SOURCES := setup.cfg pyproject.toml $(shell find monit twisted -name '*.py')
LISTEN ?= tcp:8080:interface=127.0.0.1
SECOND_LISTEN ?= tcp:8081:interface=127.0.0.1
FLAGS ?=
NATS_PORT ?= 4222
DEV_SECRET ?= monit-development-secret-not-for-production
# Where LISTEN serves, as a URL: http(s)://INTERFACE:PORT (127.0.0.1 when no interface= is given).
BASE_URL = $(shell $(PYTHON) -c "import sys; kind, port, *rest = sys.argv[1].split(':'); \
	opts = dict(o.split('=', 1) for o in rest if '=' in o); \
	print(('https' if kind == 'ssl' else 'http') + '://' + opts.get('interface', '127.0.0.1') + ':' + port)" '$(LISTEN)')

.PHONY: test docs news changelog dist matrix chaos run run-second demo bench soak clean chromium redis nginx systemd

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# A real (non-editable) install, so the twistd plugin is used the way users get it.
$(VENV)/.installed: $(BIN)/python $(SOURCES)
	$(BIN)/python -m pip install -q '.[test,embedded,bench,docs]'
	touch $@

# The browser test drives Debian's Chromium; install it when it is missing.
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# The --auth-redis tests start Debian's redis-server; install it when it is missing.
redis:
	@command -v redis-server >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server)

# tests/scenarios/test_contrib.py checks contrib/'s nginx file with Debian's nginx (nginx -t) ...
nginx:
	@command -v nginx >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx)

# ... and its systemd unit with Debian's systemd-analyze (verify).
systemd:
	@command -v systemd-analyze >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd)

test: $(VENV)/.installed chromium redis nginx systemd
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(MAKE) --no-print-directory docs
	$(MAKE) --no-print-directory news
	$(MAKE) --no-print-directory dist
	$(BIN)/python -m pytest -q

# Every change to monit/ since the last release brings a news fragment (newsfragments/README.rst),
# and the fragments make a changelog: shown here, written into NEWS.rst by make changelog at a release.
news: $(VENV)/.installed
	$(BIN)/python admin/check_newsfragments.py
	@draft=$$($(BIN)/towncrier build --draft 2>&1) || { echo "$$draft"; exit 1; }; echo "$$draft" | sed -n '/^What is seen below/,$$p'

# At a release (CONTRIBUTING.md): the version's entry into NEWS.rst, its fragments removed with git rm.
changelog: $(VENV)/.installed
	$(BIN)/towncrier build --yes

# The release's files, checked as users get them: sdist and wheel in dist/, twine's check, then the
# wheel installed into a new virtual environment and run there (admin/check_wheel.py).
dist: $(VENV)/.installed
	rm -rf dist
	$(BIN)/python -m build --quiet --outdir dist .
	$(BIN)/twine check --strict dist/*
	$(BIN)/python admin/check_wheel.py dist/*.whl

# The documentation site (docs/) into docs/_build/html; a warning (a broken reference among them) fails it.
docs: $(VENV)/.installed
	$(BIN)/sphinx-build -q -W --keep-going -n -b html docs docs/_build/html

# The unit tests on Python 3.11, 3.12 and 3.13, each at setup.cfg's floors and at the newest releases
# (noxfile.py), with pyenv's interpreters where pyenv has them; NOX_ARGS='-s NAME' runs some (nox --list).
PYENV_PYTHONS := $(subst : ,:,$(addsuffix :,$(wildcard $(HOME)/.pyenv/versions/3.1[123].*/bin)))

$(BIN)/nox: $(BIN)/python
	$(BIN)/python -m pip install -q 'nox>=2024.10'

matrix: $(BIN)/nox
	PATH="$(PYENV_PYTHONS)$$PATH" $(BIN)/nox --envdir $(VENV)/nox $(NOX_ARGS)

# The chaos test alone (tests/scenarios/test_chaos.py): CHAOS_SEED=N replays a failure's schedule, CHAOS_SECONDS=N changes its minute.
chaos: $(VENV)/.installed
	CHAOS_SEED=$(CHAOS_SEED) CHAOS_SECONDS=$(CHAOS_SECONDS) $(BIN)/python -m pytest -q tests/scenarios/test_chaos.py

run: $(VENV)/.installed
	@token=$$($(BIN)/monit-token --secret $(DEV_SECRET) --user dev --lifetime 86400); \
	echo "monit serves $(BASE_URL), with NATS on 127.0.0.1:$(NATS_PORT)."; \
	echo "1. In a second window, watch a job:"; \
	echo "   curl -N -H 'X-Auth-Token: $$token' '$(BASE_URL)/events?stream=demo1'"; \
	echo "   or in a browser: $(BASE_URL)/watch?stream=demo1#token=$$token"; \
	echo "2. In a third window, play one: make demo$(if $(filter 4222,$(NATS_PORT)),, NATS_PORT=$(NATS_PORT))"
	JWT_SECRET=$(DEV_SECRET) $(BIN)/twistd -n --pidfile= monit --embedded-nats --embedded-nats-port $(NATS_PORT) --listen '$(LISTEN)' $(FLAGS)

# A second instance on the same NATS (start `make run FLAGS=--jetstream` first): both serve every job.
run-second: $(VENV)/.installed
	JWT_SECRET=$(DEV_SECRET) $(BIN)/twistd -n --pidfile= monit --jetstream --nats nats://127.0.0.1:$(NATS_PORT) --listen '$(SECOND_LISTEN)' $(FLAGS)

demo: $(VENV)/.installed
	$(BIN)/python examples/demo_job.py --nats nats://127.0.0.1:$(NATS_PORT) --job demo1

# The benchmark suite (benchmarks/README.md); BENCH_ARGS=--smoke for a quick pass.
bench: $(VENV)/.installed
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

# The soak test (benchmarks/README.md): 1 min baseline, 10 min attack; SOAK_ARGS=--smoke or --minutes 1.
soak: $(VENV)/.installed
	$(BIN)/python benchmarks/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info docs/_build
