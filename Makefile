# The two commands: `make run` starts the system, `make test` runs the tests.
# Both create the virtualenv (.venv) from the pinned requirements when needed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Test processes running at once: most tests wait on real processes, not the CPU.
TEST_WORKERS ?= 2
# A marker expression both halves of `make test` are narrowed to: MARKERS="not slow".
MARKERS ?=
SELECTED = $(if $(MARKERS),($(MARKERS)) and ,)

## Start the whole system (API, worker, Flower; embedded Valkey and model server
## for what .env does not configure). Ctrl-C stops it.
run: $(STAMP)
	$(BIN)/python -m local_stack.run

.PHONY: run test test-quick lint format api worker flower clean k8s-alerts

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

## Run the whole test suite (needs RabbitMQ and Redis on 127.0.0.1; .ci/run starts them):
## the tests that share nothing in TEST_WORKERS processes at once, then those marked
## `alone` (they stop the machine's RabbitMQ, change its settings, or load
## the whole machine) one by one. MARKERS narrows both halves (MARKERS="fault");
## PYTEST_ARGS goes to both. A half that selects nothing (exit 5) is no failure.
test: $(STAMP)
	@status=0; \
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "$(SELECTED)not alone" $(PYTEST_ARGS) || status=$$?; \
	[ $$status -eq 5 ] && status=0; \
	$(BIN)/python -m pytest -m "$(SELECTED)alone" $(PYTEST_ARGS) || { s=$$?; [ $$s -eq 5 ] || status=$$s; }; \
	exit $$status

## Only the quick unit tests: no broker, Redis or worker.
test-quick: $(STAMP)
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## The parts one by one, against the broker and Redis of .env / the environment.
api: $(STAMP)
	$(BIN)/uvicorn --factory api.main:create_app --host $${API_HOST:-127.0.0.1} --port $${API_PORT:-8000} --timeout-graceful-shutdown 30

worker: $(STAMP)
	$(BIN)/celery -A tasks.app worker -l info --without-mingle

flower: $(STAMP)
	$(BIN)/celery -A tasks.app flower --address=$${FLOWER_HOST:-127.0.0.1} --port=$${FLOWER_PORT:-5555}

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

## Copy the alerting rules (deploy/prometheus/alerts.yml) into the Kubernetes
## example's PrometheusRule (deploy/k8s/alerts.yaml), below its header.
k8s-alerts:
	{ sed -n '1,/^spec:$$/p' deploy/k8s/alerts.yaml; sed -n '/^groups:/,$$p' deploy/prometheus/alerts.yml | sed 's/^./  &/'; } \
	  > deploy/k8s/alerts.yaml.new
	mv deploy/k8s/alerts.yaml.new deploy/k8s/alerts.yaml
