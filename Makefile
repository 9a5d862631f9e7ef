# One command per check, each run from the project's own virtual environment (.venv), which the
# first target that needs it creates and fills; editing pyproject.toml refills it.
# Override on the command line: `make test PYTEST_ARGS="tests/unit -x"`,
# `make register USERNAME=bob EMAIL=bob@example.com`, `make test PYTHON=python3.12` (the
# interpreter that creates .venv).

PYTHON ?= python
VENV ?= .venv
PYTEST_ARGS ?=
COMPOSE ?= docker compose
# Plain `=` (not `?=`): a USERNAME already in the shell's environment must not pick the user
# to register; only the command line overrides these.
USERNAME = alice
EMAIL = alice@example.com

VENV_BIN := $(abspath $(VENV))/bin
VENV_PYTHON := $(VENV_BIN)/python
# Touched once `.[dev]` is installed; older than pyproject.toml means the install is stale.
INSTALLED := $(VENV)/.installed
# The tests start the console scripts (producer-service, email-consumer) by name.
export PATH := $(VENV_BIN):$(PATH)

.DEFAULT_GOAL := help
# The suites that run against RabbitMQ 4 too (`make test-rabbitmq4`); .ci/rabbitmq4-root builds
# (once, as root, ~2 min) the Debian trixie root filesystem with RabbitMQ 4.0 that they run.
RABBITMQ4_SUITES := integration e2e faults
# The benchmark's smoke run brings its own broker set-up (TEST_AMQP_URL's): nothing for 4.0 there.
RABBITMQ4_IGNORED := tests/integration/test_bench_smoke.py
RABBITMQ4_PYTEST := -m pytest $(RABBITMQ4_IGNORED:%=--ignore=%)
# A failed build must stop the run, not leave TEST_RABBITMQ_ROOT empty (that would test 3.10).
WITH_RABBITMQ4 = root=$$(.ci/rabbitmq4-root) && TEST_RABBITMQ_ROOT=$$root

.PHONY: help venv install test compose-test lint format typecheck check up down register bench faults
.PHONY: test-rabbitmq4 $(RABBITMQ4_SUITES:%=test-rabbitmq4-%)

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-15s %s\n", $$1, $$2}'

$(VENV_PYTHON):
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): pyproject.toml | $(VENV_PYTHON)
	$(VENV_PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

venv: $(INSTALLED) ## create .venv and install the project with its development tools, if needed

install: | $(VENV_PYTHON) ## (re)install the project with its development tools (editable) into .venv
	$(VENV_PYTHON) -m pip install --disable-pip-version-check -e '.[dev]'
	touch $(INSTALLED)

test: $(INSTALLED) ## run the test suite (needs RabbitMQ: a local one, or Docker to start the compose one)
	$(VENV_PYTHON) -m pytest $(PYTEST_ARGS)

test-rabbitmq4: $(INSTALLED) ## integration, e2e and fault suites on RabbitMQ 4.0 (root; also test-rabbitmq4-SUITE)
	$(WITH_RABBITMQ4) $(VENV_PYTHON) $(RABBITMQ4_PYTEST) $(RABBITMQ4_SUITES:%=tests/%) $(PYTEST_ARGS)

$(RABBITMQ4_SUITES:%=test-rabbitmq4-%): test-rabbitmq4-%: $(INSTALLED)
	$(WITH_RABBITMQ4) $(VENV_PYTHON) $(RABBITMQ4_PYTEST) tests/$* $(PYTEST_ARGS)

compose-test: $(INSTALLED) ## run the Docker quick start for real (needs a Docker engine; ~3 min)
	$(VENV_PYTHON) -m pytest tests/compose $(PYTEST_ARGS)

lint: $(INSTALLED) ## ruff lint and formatting check
	$(VENV_PYTHON) -m ruff check .
	$(VENV_PYTHON) -m ruff format --check .

format: $(INSTALLED) ## apply ruff's fixes and formatting
	$(VENV_PYTHON) -m ruff check --fix .
	$(VENV_PYTHON) -m ruff format .

typecheck: $(INSTALLED) ## mypy --strict (configured in pyproject.toml)
	$(VENV_PYTHON) -m mypy

check: lint typecheck test ## lint, typecheck and test

up: ## build and run the whole system with Docker
	$(COMPOSE) up --build

down: ## stop the system (keeps the volumes; `docker compose down -v` drops them)
	$(COMPOSE) down

register: ## register a user through the compose stack: make register USERNAME=bob EMAIL=bob@example.com
	$(COMPOSE) run --rm producer register '$(USERNAME)' '$(EMAIL)'

# The brokers section measures RabbitMQ 4.0 too where .ci/rabbitmq4-root can build its root (as
# root); elsewhere it says so and measures the cluster only. BENCH_RABBITMQ4_ROOT set: that root.
bench: $(INSTALLED) ## run the benchmarks (prints a table, writes bench/results/latest.json)
	@root=$${BENCH_RABBITMQ4_ROOT:-$$(.ci/rabbitmq4-root || true)}; \
	BENCH_RABBITMQ4_ROOT=$$root $(VENV_PYTHON) -m bench

faults: $(INSTALLED) ## run the fault-injection suite alone, with its longer variants
	FAULTS_LONG=1 $(VENV_PYTHON) -m pytest tests/faults $(PYTEST_ARGS)
