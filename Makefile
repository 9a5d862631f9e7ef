# One command per check. Tools run as `python -m ...` so they work whatever is on PATH.
# Override on the command line: `make test PYTEST_ARGS="tests/unit -x"`,
# `make register USERNAME=bob EMAIL=bob@example.com`.

PYTHON ?= python
PYTEST_ARGS ?=
COMPOSE ?= docker compose
# Plain `=` (not `?=`): a USERNAME already in the shell's environment must not pick the user
# to register; only the command line overrides these.
USERNAME = alice
EMAIL = alice@example.com

.DEFAULT_GOAL := help
.PHONY: help install test lint format typecheck check up down register bench faults

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

install: ## install the project with its development tools (editable)
	$(PYTHON) -m pip install -e '.[dev]'

test: ## run the test suite (needs RabbitMQ: a local one, or Docker to start the compose one)
	$(PYTHON) -m pytest $(PYTEST_ARGS)

lint: ## ruff lint and formatting check
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format: ## apply ruff's fixes and formatting
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

typecheck: ## mypy --strict (configured in pyproject.toml)
	$(PYTHON) -m mypy

check: lint typecheck test ## lint, typecheck and test

up: ## build and run the whole system with Docker
	$(COMPOSE) up --build

down: ## stop the system (keeps the volumes; `docker compose down -v` drops them)
	$(COMPOSE) down

register: ## register a user through the compose stack: make register USERNAME=bob EMAIL=bob@example.com
	$(COMPOSE) run --rm producer register '$(USERNAME)' '$(EMAIL)'

bench: ## run the benchmarks (prints a table, writes bench/results/latest.json)
	$(PYTHON) -m bench

faults: ## run the fault-injection suite alone, with its longer variants
	FAULTS_LONG=1 $(PYTHON) -m pytest tests/faults $(PYTEST_ARGS)
