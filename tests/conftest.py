"""Session fixtures: one local Ray cluster with Serve, one MLflow registry, one trained model.

Ray and Serve start once per session (10-20 s here); each test deploys its own app and deletes
it. The registry is a SQLite file in a temp dir; training really runs Ray Tune (small sizes).
"""

from __future__ import annotations

import os

import pytest

from tests.helpers import free_port, wait_until

# At least 24 characters: the router refuses shorter tokens and known placeholders at start.
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
FEEDBACK_TOKEN = "test-feedback-token-0123456789abcdef"


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    return uri


@pytest.fixture(scope="session")
def ray_cluster(mlflow_uri):
    """A local Ray cluster with Serve's HTTP proxy on a free port; workers inherit this env."""
    import ray
    from ray import serve

    os.environ["MLOPS_ADMIN_TOKEN"] = ADMIN_TOKEN
    os.environ["MLOPS_FEEDBACK_TOKEN"] = FEEDBACK_TOKEN
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    port = free_port()
    # Fault injection (tests/faults.py) registers wrapper models that only cloudpickle can
    # carry; the model servers of this session may load them. Set for the cluster's processes
    # only (they inherit the environment when Ray starts) and restored for this one, so the
    # unit tests of training/safe_load.py still see the default (skops only).
    allow = {
        "MLOPS_MODEL_LOADING__ALLOWED_FORMATS": "[skops, cloudpickle]",
        "MLOPS_MODEL_LOADING__ALLOWED_ESTIMATORS": "[tests.faults.FlakyModel, "
        "tests.faults.PoisonRowModel]",
    }
    saved = {k: os.environ.get(k) for k in allow}
    os.environ.update(allow)
    try:
        # address="local": never join a cluster that `make run` may have started here.
        # Metrics reach the export port every 2 s instead of Ray's 10 s: the tests that read
        # them (metrics export, registry outage) wait less.
        ray.init(
            address="local",
            num_cpus=4,
            include_dashboard=False,
            log_to_driver=False,
            _system_config={"metrics_report_interval_ms": 2000},
        )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield {"http": f"http://127.0.0.1:{port}"}
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def training_config():
    from configs import load_training_config

    return load_training_config().model_copy(
        update={"num_samples": 4, "cv_folds": 3, "max_concurrent_trials": 2, "trial_cpus": 0.5}
    )


@pytest.fixture(scope="session")
def trained(ray_cluster, mlflow_uri, training_config):
    """The first model, trained with Ray Tune and registered as champion."""
    from training.train import train

    return train(training_config, mlflow_uri)


REGRESSOR = "diabetes_regressor_test"


@pytest.fixture(scope="session")
def regression_config(training_config):
    """The session's training config on the bundled diabetes dataset (task detected)."""
    cfg = training_config.model_copy(
        update={"dataset": "diabetes", "task": "auto", "model_name": REGRESSOR, "num_samples": 4}
    )
    return type(cfg).model_validate(cfg.model_dump())


@pytest.fixture(scope="session")
def trained_regressor(ray_cluster, mlflow_uri, regression_config):
    """A regressor, trained with Ray Tune over the regression families and registered as
    champion of ``REGRESSOR``."""
    from training.train import train

    return train(regression_config, mlflow_uri)


def _app_deployer(ray_cluster, mlflow_uri):
    """``deploy(name, **overrides)`` runs ``build_app`` under ``name`` at route "/" and waits
    until it is RUNNING; ``cleanup()`` deletes what it deployed."""
    from ray import serve

    from deployments.app import AppArgs, build_app

    deployed = []

    def deploy(name: str = "raymlops-test", routers: int = 1, **overrides):
        """``routers``: Router replicas (production runs 2; one is enough where a test does
        not lose one, and each replica is a process to start on this 2-core machine)."""
        from deployments import router

        args = AppArgs(
            **{"tracking_uri": mlflow_uri, "poll_timeout_s": 2.0, "registry_poll_s": 1.0}
            | overrides
        )
        production = router.Router
        router.Router = production.options(num_replicas=routers)
        try:
            app = build_app(args)
        finally:
            router.Router = production
        serve.run(app, name=name, route_prefix="/", blocking=False)
        deployed.append(name)
        wait_until(
            lambda: serve.status().applications[name].status == "RUNNING",
            timeout=120,
            what=f"app {name} RUNNING",
        )
        return ray_cluster["http"]

    def cleanup():
        for name in dict.fromkeys(deployed):  # a test may redeploy an app under one name
            if name in serve.status().applications:
                serve.delete(name)

    return deploy, cleanup


@pytest.fixture
def serve_app(ray_cluster, mlflow_uri):
    """Deploy ``build_app`` under a unique name; deleted after the test."""
    deploy, cleanup = _app_deployer(ray_cluster, mlflow_uri)
    yield deploy
    cleanup()


@pytest.fixture(scope="module")
def module_app(ray_cluster, mlflow_uri):
    """Like `serve_app`, for one app that the tests of a module share (a deploy costs about
    20 s here): deleted after the module. Only one app holds route "/" at a time, so a test
    of that module that deploys an app of its own must run after the shared one's tests."""
    deploy, cleanup = _app_deployer(ray_cluster, mlflow_uri)
    yield deploy
    cleanup()


def trust_in_model_servers(monkeypatch, env: dict[str, str]) -> None:
    """The ModelServer deployments of apps built after this call get ``env`` in their
    processes' environment (as an operator sets ``MLOPS_MODEL_LOADING__*``); the session's
    other apps keep the default loading policy."""
    from deployments import model_server

    base = model_server.ModelServer
    options = {**(base.ray_actor_options or {}), "runtime_env": {"env_vars": env}}
    monkeypatch.setattr(model_server, "ModelServer", base.options(ray_actor_options=options))


def reset_champion(mlflow_uri, name: str, version: str) -> None:
    """``version`` champion, no challenger, no rollout record."""
    from training import registry

    client = registry.get_client(mlflow_uri)
    registry.set_alias(client, name, registry.CHAMPION, version)
    registry.delete_alias(client, name, registry.CHALLENGER)
    client.set_registered_model_tag(name, "mlops.rollout", "")


@pytest.fixture
def champion(trained, mlflow_uri, training_config):
    """Every test using it starts from the trained champion and no challenger; restored
    afterwards."""
    reset_champion(mlflow_uri, training_config.model_name, trained.version)
    yield trained.version
    reset_champion(mlflow_uri, training_config.model_name, trained.version)


def copy_version(mlflow_uri, name, version) -> str:
    """Register the same artifacts again: a challenger as good as the champion."""
    import mlflow

    from training import registry

    client = registry.get_client(mlflow_uri)
    mv = client.get_model_version(name, version)
    registry.use_tracking_uri(mlflow_uri)
    return str(mlflow.register_model(mv.source, name, tags=mv.tags).version)


@pytest.fixture(scope="session")
def data(training_config):
    """The training dataset (features, labels) as `python -m training` loads it."""
    from training.data import load_dataset

    return load_dataset(training_config.dataset)


@pytest.fixture
def client():
    """An HTTP client for the app under test (foreign-model tests override its timeout)."""
    import httpx

    with httpx.Client(timeout=30) as c:
        yield c
