# Every target runs through uv, so people and CI run the same commands.
# `make help` lists them.

UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
RUN := $(UV) run --locked

.DEFAULT_GOAL := help
.PHONY: help deps sync compile clean-compiled run test lint format k8s-check bench loadtest soak

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

deps: ## Install system packages (Redis, PostgreSQL, curl) and uv when missing
	@bash scripts/install-deps.sh

sync: deps ## Install the Python workspace from uv.lock
	@$(UV) sync --locked --quiet

compile: sync ## Compile the mechanics' hot path with mypyc (only when a source changed)
	@$(RUN) python scripts/compile_hot_path.py

clean-compiled: ## Remove the compiled modules: the sources run as plain Python
	@python3 scripts/compile_hot_path.py --clean

run: compile ## Run the whole system locally (own Redis/PostgreSQL unless REDIS_URL/DATABASE_URL)
	@$(RUN) bricqs-dev

test: compile k8s-check ## Run every test against throwaway Redis and PostgreSQL servers
	@$(RUN) pytest $(PYTEST_ARGS)

k8s-check: sync ## Render the kustomize overlays, validate every object, lint the Dockerfile
	@$(RUN) bash scripts/k8s-check.sh

bench: compile ## Benchmark ingest, processor and references on loopback; table + .bench/*.json
	@$(RUN) python -m bench $(BENCH_ARGS)

soak: compile ## The fault suite's long form: SOAK_SECONDS (default 300) of load under faults
	@BRICQS_FAULT_LOAD_SECONDS=$(or $(SOAK_SECONDS),300) $(RUN) pytest tests/faults $(PYTEST_ARGS)

loadtest: compile ## Locust, realistic mix, open loop, SLO gate per endpoint, on a local stack (CSV in .bench/loadtest)
	@$(RUN) python -m loadtests.run $(LOADTEST_ARGS)

lint: sync ## ruff (lint + format check) and mypy strict
	@$(RUN) ruff check .
	@$(RUN) ruff format --check .
	@$(RUN) mypy

format: sync ## Apply ruff's formatting and safe fixes
	@$(RUN) ruff format .
	@$(RUN) ruff check --fix .
