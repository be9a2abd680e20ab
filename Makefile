# The project's commands. `make demo` runs the main job, `make test` runs every test
# (lint included); both set up what they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# localenv makes the broker's certificates with `cryptography`, which the virtualenv has.
LOCALENV := $(PY) localenv/localenv.py

.PHONY: help venv protos lint typecheck format unit test env-build env-up env-down demo demo-down bench bench-sidecar bench-log bench-operator bench-activator image chart-sync dashboard-picture

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python >= 3.11 is needed" if sys.version_info < (3, 11) else 0)'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed ## create the virtualenv with the project and its test dependencies

protos: venv ## regenerate modelserving/tfserving's modules from its .proto files (committed; a unit test compares)
	$(PY) tools/generate_protos.py

lint: venv ## ruff lint and format check, mypy type check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(MAKE) --no-print-directory typecheck

typecheck: venv ## mypy (strict) on the packages of the source roots (pyproject's tool.mypy)
	$(VENV)/bin/mypy

format: venv ## apply ruff's fixes and format
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The test runs' processes (pytest-xdist): a test file's tests run in one of them, in order.
TEST_WORKERS ?= 4

unit: venv ## the unit tests alone (no cluster, no Kafka)
	$(PY) -m pytest -m "not integration" -n 2 --dist loadfile --hypothesis-profile quick

test: lint ## every test: lint, unit, and integration against the local environment
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

env-build: venv ## build and cache the local environment's parts (Kubernetes, etcd, KWOK, helm, Kafka, Jaeger)
	$(LOCALENV) build

env-up: venv ## start the local environment; then `source .localenv/env.sh`
	$(LOCALENV) up

env-down: venv ## stop the local environment
	$(LOCALENV) down

demo: venv ## the main job: the whole system on a local cluster, step by step (KEEP=1 leaves it running)
	$(PY) demo/run.py $(if $(KEEP),--keep)

demo-down: venv ## stop a demo left running with KEEP=1, and the local environment
	$(PY) demo/run.py --down

image: venv ## build the container image with buildah (no Docker engine); IMAGE_ARCHIVE=FILE also saves it as an OCI archive
	$(PY) tools/build_image.py $(if $(IMAGE_ARCHIVE),--oci-archive $(IMAGE_ARCHIVE))

# A few minutes of varied traffic through the real parts, then the dashboard drawn from what
# Prometheus scraped (tools/dashboard_run.py); ARGS passes flags on, e.g. ARGS="--seconds 120".
dashboard-picture: venv ## the chart's Grafana dashboard drawn from a short real run (about 5 min): charts/modelserving/docs/dashboard.png
	$(PY) tools/dashboard_run.py $(ARGS)

chart-sync: ## copy crds/ into the chart and set the chart's appVersion to the project's version
	rm -f charts/modelserving/crds/*.yaml
	cp crds/*.yaml charts/modelserving/crds/
	version=$$($(PYTHON) -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])') && \
	sed -i "s/^appVersion: .*/appVersion: \"$$version\"/" charts/modelserving/Chart.yaml

bench: venv ## benchmarks side by side (about 20 min; the environment must be up): docs/benchmarks.md
	$(PY) -m bench.run

# Before/after comparisons for a change, each run side by side with what it is compared to:
# ARGS passes flags on (`--help` lists them), e.g. make bench-sidecar ARGS="--baseline HEAD~1".
bench-sidecar: venv ## the sidecar's request path beside a bare aiohttp proxy; ARGS="--baseline REV" adds another revision's sidecar, "--grpc" its gRPC path (a minute, no cluster)
	$(PY) -m bench.comparisons.compare_sidecar $(ARGS)

bench-log: venv ## the inference log's records/s and CPU per record; ARGS="--baseline REV" adds another revision's (the broker must be up)
	$(PY) -m bench.comparisons.compare_log $(ARGS)

bench-operator: venv ## the operator at ARGS servings (default "100 1000"): progress, memory, a restart's writes (the environment must be up)
	$(PY) -m bench.comparisons.operator_sizes $(or $(ARGS),100 1000)

bench-activator: venv ## the activator: added latency and rps/core on the warm path, a request from zero beside the pod's ready time, 50 held at once (the environment must be up)
	$(PY) -m bench.comparisons.compare_activator $(ARGS)
