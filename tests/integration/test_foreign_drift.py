"""Drift on a model our training did not register (issue 13 item 3), behind real HTTP.

A team's Ridge regressor, logged with a signature and nothing else of ours (no reference
artifact, no ``family`` tag): the monitor takes the first rows it serves as the reference,
then a covariate shift fires the detector, and with no retraining entry point configured the
alert is all that happens (`retraining: not configured`, no retraining started).
"""

from __future__ import annotations

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature

from tests.conftest import trust_in_model_servers
from tests.helpers import wait_until
from training import registry

pytestmark = pytest.mark.ray

APP = "foreign-drift"
NAME = "team_live_reference_ridge"
COLUMNS = ["a", "b", "c"]
LIVE_ROWS = 100
DRIFT = {
    "window_size": 300,
    "label_window_size": 100,
    "min_samples": 50,
    "min_labelled": 50,
    "min_new_samples": 50,
    "hysteresis_count": 1,
    "cooldown_s": 600,
    "evaluate_interval_s": 0.5,
    "live_reference_rows": LIVE_ROWS,
}


@pytest.fixture
def trusting_servers(monkeypatch):
    """The app's model servers may load a bare Ridge (an operator's MLOPS_MODEL_LOADING__*)."""
    trust_in_model_servers(
        monkeypatch,
        {"MLOPS_MODEL_LOADING__ALLOWED_ESTIMATORS": "[sklearn.linear_model._ridge.Ridge]"},
    )


def rows(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(shift, 1.0, size=(n, len(COLUMNS))), columns=COLUMNS)


def register_ridge(mlflow_uri: str) -> str:
    from sklearn.linear_model import Ridge

    X = rows(200, seed=0)
    model = Ridge().fit(X, X.sum(axis=1))
    registry.use_tracking_uri(mlflow_uri)
    client = registry.get_client(mlflow_uri)
    exp = registry.ensure_experiment(client, "foreign-models", mlflow_uri)
    with mlflow.start_run(experiment_id=exp):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="skops",
            signature=infer_signature(X, model.predict(X)),
            pip_requirements=["scikit-learn"],
        )
    version = str(mlflow.register_model(info.model_uri, NAME).version)
    registry.set_alias(client, NAME, registry.CHAMPION, version)
    return version


def status(c: httpx.Client, url: str) -> dict:
    r = c.get(f"{url}/monitor/status")
    r.raise_for_status()
    return r.json()


def send(c: httpx.Client, url: str, frame: pd.DataFrame) -> None:
    for start in range(0, len(frame), 50):
        chunk = frame.iloc[start : start + 50].to_dict(orient="records")
        r = c.post(f"{url}/predict", json={"features": chunk})
        assert r.status_code == 200, r.text


def test_live_reference_then_shift_alerts_without_retraining(
    serve_app, trusting_servers, ray_cluster, mlflow_uri
):
    version = register_ridge(mlflow_uri)
    url = serve_app(name=APP, model_name=NAME, drift=DRIFT, retraining={"entry_point": None})
    with httpx.Client(timeout=30) as c:
        wait_until(lambda: c.get(f"{url}/health").status_code == 200, 60, what="model ready")
        # The monitor follows the champion: no reference of ours, so a live one.
        wait_until(
            lambda: status(c, url).get("reference_source") == "live", 30, what="live reference"
        )
        st = status(c, url)
        assert st["reference_version"] == version
        assert st["retraining"]["recipe"] == "not configured"

        send(c, url, rows(50, seed=1))
        wait_until(
            lambda: (
                status(c, url)["reference_collecting"]
                == f"collecting reference (50 of {LIVE_ROWS} rows)"
            ),
            15,
            what="half the reference",
        )
        st = status(c, url)
        assert st["last_evaluation"]["skipped"]["ks"].startswith("collecting reference")
        assert st["detectors"]["ks"] is False

        # The reference completes, then rows like it: nothing fires.
        send(c, url, rows(50, seed=2))
        send(c, url, rows(100, seed=3))
        wait_until(
            lambda: (status(c, url)["last_evaluation"] or {}).get("n_current") == 100,
            15,
            what="analysis rows evaluated",
        )
        st = status(c, url)
        assert st["reference_collecting"] is None
        assert st["detectors"]["ks"] is False and st["last_retraining"] is None

        # A covariate shift: the alert fires, and with no recipe nothing else happens.
        send(c, url, rows(150, seed=4, shift=2.5))
        wait_until(lambda: status(c, url)["detectors"]["ks"], 15, what="ks fired")
        wait_until(
            lambda: status(c, url)["last_retraining"] is not None, 10, what="trigger handled"
        )
        st = status(c, url)
        assert st["last_retraining"]["retraining"] == "not configured"
        assert st["retraining_running"] is False and st["retraining"]["started"] == 0
        events = [e["event"] for e in st["timeline"]]
        assert events.count("retraining_not_configured") == 1
        assert "retraining_started" not in events
