"""Every route of the app's own OpenAPI document, fuzzed from the outside (schemathesis), with
and without credentials, in positive and negative generation: no response is a 5xx and no
replica restarts. The hand-made hostile bodies of the trust-boundary review are in
`test_hostile_inputs.py`; this module finds what nobody thought to write down.

The same check against `make run` (README, "Security and failure model"):

    .venv/bin/st run http://127.0.0.1:8000/openapi.json --checks not_a_server_error \\
        --max-examples 50 -H "Authorization: Bearer $(cat .mlops/admin_token)"
"""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable

from tests.conftest import ADMIN_TOKEN, FEEDBACK_TOKEN

schemathesis = pytest.importorskip("schemathesis", reason="test extra: pip install -e '.[dev]'")

APP = "raymlops-fuzz"
EXAMPLES = 25  # per operation, per generation mode, per credential: about 2 minutes here


def _replica_actor_ids() -> set[str]:
    """Names of the app's live replica actors (Serve names them by a replica id that a
    restarted replica does not reuse)."""
    import ray

    return {
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{APP}#")
    }


def _credentials(path: str, authorized: bool) -> dict[str, str]:
    if not authorized:
        return {}
    token = FEEDBACK_TOKEN if path == "/feedback" else ADMIN_TOKEN
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.ray
def test_fuzzing_every_route_gives_no_5xx_and_no_replica_restart(serve_app, champion):
    http = serve_app(name=APP)
    schema = schemathesis.openapi.from_url(f"{http}/openapi.json")
    before = _replica_actor_ids()
    assert before, "no replica of the app found"

    failures: list[str] = []
    skipped: list[str] = []
    counted = {"calls": 0, "unsendable": 0}
    client = httpx.Client(timeout=30)

    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/predict", "/invocations", "/feedback", "/health"}

    def fuzz(op, mode, authorized: bool) -> None:
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy(generation_mode=mode))
        def run(case):
            kwargs = case.as_transport_kwargs(base_url=http)
            headers = {
                k: str(v)
                for k, v in (kwargs.pop("headers", None) or {}).items()
                if k.lower() != "authorization" or not authorized
            }
            headers.update(_credentials(op.path, authorized))
            try:
                resp = client.request(
                    kwargs.pop("method"),
                    kwargs.pop("url"),
                    headers=headers,
                    params=kwargs.pop("params", None),
                    content=_content(kwargs),
                )
            except httpx.LocalProtocolError:
                # The client refused to send it (a generated header value such as "Bearer "
                # that HTTP does not allow): nothing reached the server.
                counted["unsendable"] += 1
                return
            except httpx.TransportError as exc:
                failures.append(f"{op.method.upper()} {op.path}: {exc!r}")
                return
            counted["calls"] += 1
            if resp.status_code >= 500:
                failures.append(
                    f"{op.method.upper()} {op.path} -> {resp.status_code} "
                    f"{resp.text[:200]} (body {str(case.body)[:200]})"
                )

        try:
            run()
        except Unsatisfiable:
            # A route with nothing to get wrong (no body, no parameters) has no negative case.
            assert mode == schemathesis.GenerationMode.NEGATIVE, f"{op.path}: no valid case"
            skipped.append(f"{op.method.upper()} {op.path}")

    for op in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            for authorized in (False, True):
                fuzz(op, mode, authorized)

    client.close()
    assert not failures, f"{len(failures)} 5xx / dropped:\n" + "\n".join(failures[:20])
    assert counted["calls"] > 100
    assert counted["unsendable"] < counted["calls"] / 10, counted
    # The routes of issue 13 are in the document, so fuzzed too.
    assert {op.path for op in operations} >= {
        "/ping",
        "/version",
        "/v2",
        "/v2/health/ready",
        "/v2/models/{name}",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    }

    assert httpx.get(f"{http}/health", timeout=10).status_code == 200
    after = _replica_actor_ids()
    assert before <= after, f"replicas restarted: {sorted(before - after)}"


def _content(kwargs: dict) -> bytes | None:
    """The request body as bytes, whichever way schemathesis prepared it."""
    import json

    if kwargs.get("json") is not None:
        return json.dumps(kwargs["json"]).encode()
    data = kwargs.get("data")
    if data is None:
        return None
    return data if isinstance(data, bytes) else str(data).encode()
