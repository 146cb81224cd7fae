# The two commands: `make up` runs the whole stack, `make test` runs the whole suite.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: up test bench bootstrap proto envoy-config k8s-config lint clean

up: bootstrap  ## Start Redis, the services, the demo provider and Envoy; Ctrl-C stops all.
	$(PY) -m llmproxy.devstack up

test: bootstrap  ## Run the whole test suite with a coverage report of services/.
	$(VENV)/bin/pytest

bench: bootstrap  ## Run every benchmark (bench/bench_*.py); each prints its figures as JSON.
	@for script in bench/bench_*.py; do $(PY) -m bench.$$(basename $$script .py) || exit 1; done

bootstrap:
	@scripts/bootstrap.sh

proto: bootstrap  ## Regenerate the Python stubs from proto/.
	$(PY) scripts/gen_protos.py

envoy-config: bootstrap  ## Regenerate envoy/envoy.yaml and envoy/llmproxy.protoset from deploy/llmproxy.yaml.
	$(PY) -m llmproxy.envoyconf --config deploy/llmproxy.yaml --out envoy --demo

k8s-config: bootstrap  ## Regenerate the Kubernetes manifests deploy/k8s from deploy/llmproxy.yaml.
	$(PY) -m llmproxy.k8sconf --config deploy/llmproxy.yaml --out deploy/k8s

lint: bootstrap  ## What pre-commit runs, plus buf.
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy && $(VENV)/bin/lint-imports --no-cache && $(VENV)/bin/buf lint

clean:
	rm -rf .run build .coverage .coverage.* .pytest_cache .mypy_cache .ruff_cache
