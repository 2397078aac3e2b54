# Two commands on a fresh machine: `make run` (install, train if needed, serve) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SERVE_URL ?= http://127.0.0.1:8000
DASHBOARD_PORT ?= 8265
RAY_NUM_CPUS ?= 4

# The serve CLI finds Ray 2.60's dashboard token only with this set.
export RAY_AUTH_MODE ?= token
# Embedded default: MLflow on a SQLite file with artifacts beside it, inside the project.
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/.mlflow/mlflow.db
export MLOPS_ADMIN_TOKEN ?= $(shell cat .mlops/admin_token 2>/dev/null)

.PHONY: install run train serve stop status test test-unit lint format clean mlflow-ui

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

.mlops/admin_token:
	@mkdir -p .mlops .mlflow
	@$(PYTHON) -c "import secrets; print(secrets.token_urlsafe(24))" > $@
	@chmod 600 $@

train: install
	@mkdir -p .mlflow
	$(PY) -m training

# Start a local Ray cluster unless one is running; the env above reaches every worker.
ray-up: install .mlops/admin_token
	@mkdir -p .mlflow
	@if $(BIN)/ray status >/dev/null 2>&1; then echo "Ray is already running."; else \
	  MLOPS_ADMIN_TOKEN=$$(cat .mlops/admin_token) $(BIN)/ray start --head \
	    --dashboard-host 127.0.0.1 --dashboard-port $(DASHBOARD_PORT) \
	    --num-cpus $(RAY_NUM_CPUS) --disable-usage-stats; fi

serve: ray-up
	MLOPS_ADMIN_TOKEN=$$(cat .mlops/admin_token) $(BIN)/serve deploy serve_config.yaml
	@echo "Waiting for $(SERVE_URL)/health ..."
	@for i in $$(seq 1 120); do \
	  code=$$(curl -s -o /dev/null -w '%{http_code}' $(SERVE_URL)/health); \
	  [ "$$code" = 200 ] && break; sleep 1; done; \
	  [ "$$code" = 200 ] || { echo "app not ready after 120 s:"; curl -s $(SERVE_URL)/health; echo; \
	    $(BIN)/serve status; exit 1; }

run: ray-up
	$(PY) -m training --if-no-champion
	@$(MAKE) --no-print-directory serve
	@echo ""
	@echo "Serving $(SERVE_URL)"
	@echo "  predict:    curl -s -X POST $(SERVE_URL)/predict -H 'Content-Type: application/json' -d @examples/row.json"
	@echo "  API docs:   $(SERVE_URL)/docs"
	@echo "  health:     $(SERVE_URL)/health   model info: $(SERVE_URL)/model-info"
	@echo "  admin:      Authorization: Bearer $$(cat .mlops/admin_token)   (token in .mlops/admin_token)"
	@echo "  Ray dashboard: http://127.0.0.1:$(DASHBOARD_PORT)"
	@echo "  MLflow UI:  $(BIN)/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --port 5000   (or: make mlflow-ui)"
	@echo "  status:     RAY_AUTH_MODE=token $(BIN)/serve status      stop: make stop"

status:
	$(BIN)/serve status

mlflow-ui: install
	$(BIN)/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --port 5000

stop:
	-$(BIN)/ray stop

test: install
	$(BIN)/pytest -q -p no:cacheprovider tests

test-unit: install
	$(BIN)/pytest -q tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf .mlflow .mlops
