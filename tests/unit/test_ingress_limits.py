"""The router's limits and trust checks as plain functions: body size, token strength, how an
exception from a slot maps to a status, what unauthenticated callers may see. No Ray cluster."""

import asyncio
import json

import numpy as np
import pytest
from ray.exceptions import RayActorError, RayTaskError
from ray.serve._private.common import DeploymentID
from ray.serve.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    ReplicaUnavailableError,
)

from deployments import schemas
from deployments.app import AppArgs, LimitsArgs
from deployments.router import (
    REDACTED,
    _error,
    _mlflow_error,
    _oip_error,
    _reencode,
    classify_error,
    read_token,
    redact_errors,
)
from deployments.routing import ModelError
from deployments.schemas import InputError


class Chunks:
    """An async body stream that counts how much of it was consumed."""

    def __init__(self, chunks: list[bytes]):
        self.chunks = chunks
        self.consumed = 0

    def __aiter__(self):
        return self._gen()

    async def _gen(self):
        for c in self.chunks:
            self.consumed += 1
            yield c


def read(chunks: Chunks, content_length: str | None, limit: int) -> bytes:
    return asyncio.run(schemas.read_body(chunks, content_length, limit, "/predict"))


def test_body_within_the_limit_is_read_whole():
    assert read(Chunks([b"ab", b"cd"]), "4", 4) == b"abcd"
    assert read(Chunks([b"ab", b"cd"]), None, 4) == b"abcd"


def test_declared_length_over_the_limit_is_413_before_reading_a_byte():
    body = Chunks([b"x" * 10] * 100)
    with pytest.raises(InputError) as err:
        read(body, "1000", 999)
    assert err.value.status == 413
    assert "limit of 999 bytes for /predict" in err.value.detail
    assert body.consumed == 0


def test_undeclared_or_understated_body_is_cut_off_at_the_limit():
    for declared in (None, "5"):
        body = Chunks([b"x" * 10] * 100)
        with pytest.raises(InputError) as err:
            read(body, declared, 25)
        assert err.value.status == 413
        assert body.consumed == 3  # stopped at the chunk that crossed 25 bytes


@pytest.mark.parametrize("declared", ["ten", "-1", ""])
def test_malformed_content_length_is_400(declared):
    with pytest.raises(InputError) as err:
        read(Chunks([b"{}"]), declared, 100)
    assert err.value.status == 400


def test_default_limits_allow_a_full_batch_and_refuse_far_more():
    limits = LimitsArgs()
    assert (limits.predict_body_bytes, limits.feedback_body_bytes, limits.admin_body_bytes) == (
        8 * 1024 * 1024,
        1024 * 1024,
        64 * 1024,
    )
    # max_batch_rows rows of 30 float64 values, as many digits as json.dumps writes.
    rows = np.random.default_rng(0).normal(scale=1e6, size=(AppArgs().max_batch_rows, 30))
    body = json.dumps({"features": rows.tolist()}).encode()
    assert len(body) < limits.predict_body_bytes / 4
    # A whole /feedback body must fit one call to the monitor (gRPC's limit: 4 MB); a 50 MB
    # one once overflowed it.
    assert limits.feedback_body_bytes < 4 * 1024 * 1024
    assert AppArgs().feedback_token_env == "MLOPS_FEEDBACK_TOKEN"
    with pytest.raises(ValueError):
        AppArgs(limits={"predict_body_bytes": 10**7, "unknown": 1})


@pytest.mark.parametrize(
    "value, why",
    [
        ("change-me-admin-token", "well-known default"),
        ("change-me", "well-known default"),
        ("CHANGEME", "well-known default"),
        ("password", "well-known default"),
        ("test-admin-token", "16 characters"),
        ("x" * 23, "23 characters"),
    ],
)
def test_weak_tokens_are_refused_naming_the_variable(value, why):
    with pytest.raises(ValueError) as err:
        read_token("MLOPS_ADMIN_TOKEN", value)
    assert "MLOPS_ADMIN_TOKEN" in str(err.value) and why in str(err.value)


def test_unset_token_disables_and_a_strong_one_is_kept():
    assert read_token("MLOPS_FEEDBACK_TOKEN", None) is None
    assert read_token("MLOPS_FEEDBACK_TOKEN", "  ") is None
    assert read_token("MLOPS_FEEDBACK_TOKEN", " " + "k" * 24 + "\n") == "k" * 24


def test_serve_unavailable_errors_are_503_replica_errors_not_500s():
    dep = DeploymentID(name="blue", app_name="raymlops")
    assert classify_error(DeploymentUnavailableError(dep)) == "replica"
    assert classify_error(ReplicaUnavailableError("blue#abc")) == "replica"
    assert classify_error(RayActorError()) == "replica"
    assert classify_error(BackPressureError(num_queued_requests=9, max_queued_requests=8)) == (
        "overloaded"
    )
    assert classify_error(ModelError("3", "ValueError('x')")) == "model_error"
    assert classify_error(RayTaskError("f", "tb", ValueError("x"))) == "model_error"
    assert classify_error(KeyError("anything else")) is None  # a 500 with a generic message


def test_error_text_is_redacted_for_unauthenticated_callers():
    status = {
        "last_retraining": {"error": "OperationalError('/secret/path/mlflow.db')"},
        "timeline": [{"event": "retraining_failed", "error": "Traceback ..."}, {"event": "ok"}],
        "last_error": None,
        "accuracy": 0.9,
    }
    shown = redact_errors(status)
    assert "/secret/path" not in json.dumps(shown) and "Traceback" not in json.dumps(shown)
    assert shown["last_retraining"]["error"] == REDACTED
    assert shown["timeline"][0] == {"event": "retraining_failed", "error": REDACTED}
    assert shown["timeline"][1] == {"event": "ok"}
    assert shown["last_error"] is None and shown["accuracy"] == 0.9


def test_protocol_error_shapes_keep_status_extras_and_retry_after():
    """/invocations answers errors as MLflow's scoring server does, OIP routes as KServe and
    Triton do; both from the one `_error` answer of the shared prediction path."""
    not_live = _error(404, "version '9' is not live", live_versions=["1"])
    oip = _reencode(not_live, _oip_error)
    assert oip.status_code == 404
    assert json.loads(oip.body) == {"error": "version '9' is not live", "live_versions": ["1"]}
    mlflow = json.loads(_reencode(_error(422, "bad row"), _mlflow_error).body)
    assert mlflow["error_code"] == "BAD_REQUEST" and mlflow["message"] == "bad row"
    assert mlflow["detail"] == "bad row"  # the earlier shape, for existing clients
    busy = _reencode(_error(503, "not ready"), _mlflow_error)
    assert busy.headers["retry-after"] == "1"
    assert json.loads(busy.body)["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert json.loads(_mlflow_error(413, "too big").body)["error_code"] == "RESOURCE_EXHAUSTED"
