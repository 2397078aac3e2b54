"""Hostile requests through real HTTP against one deployed app: oversized and trickled bodies,
deep nesting, numbers no model takes, malformed admin weights, unauthenticated labels. Each
must be a 4xx (never a 5xx), and the app keeps serving. Also: two router replicas, so losing
one stops nothing. Then the feedback path: labels joined by request id, counts for what cannot
be joined, label sources, and a DriftMonitor that dies under traffic without failing a
prediction. Last, every route of the OpenAPI document fuzzed (schemathesis). One app for all:
a deploy costs about 20 s here, so the tests count on deltas, not on fresh windows."""

import http.client
import json
import socket
import threading
import time
from urllib.parse import urlparse

import httpx
import pytest
import ray
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from ray import serve

from tests.conftest import ADMIN_TOKEN, FEEDBACK_TOKEN
from tests.helpers import wait_until

pytestmark = pytest.mark.ray
APP = "raymlops-hostile"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FEEDBACK = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}
BODY_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def url(module_app, trained):
    """One app for the whole module, with two Routers as in production (one of them is
    killed) and a short body timeout so the slow-client test is quick."""
    base = module_app(name=APP, routers=2, limits={"body_timeout_s": BODY_TIMEOUT_S})
    wait_until(lambda: httpx.get(f"{base}/health").status_code == 200, 60, what="app ready")
    return base


def raw_post(url: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
    """POST with exactly these headers and body (a Content-Length that lies is the point)."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.putrequest("POST", path)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        conn.send(body)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        conn.close()


def post_json(client, url, path, body: bytes, headers=None) -> httpx.Response:
    return client.post(
        f"{url}{path}",
        content=body,
        headers={"content-type": "application/json", **(headers or {})},
    )


def test_bodies_over_the_route_limit_are_413_before_being_read(url, data, client):
    X, _ = data
    # A full batch (max_batch_rows rows of the model's 30 features) is well within the limit.
    full = X.sample(1024, replace=True, random_state=0).values.tolist()
    r = client.post(f"{url}/predict", json={"features": full})
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 1024

    # A declared length over the limit: refused on the header alone (only 10 bytes follow).
    status, body = raw_post(
        url,
        "/predict",
        {"Content-Type": "application/json", "Content-Length": str(9 * 1024 * 1024)},
        b'{"features"',
    )
    assert status == 413, body
    assert "limit of 8388608 bytes for /predict" in body["detail"]

    # No Content-Length (chunked): counted while it streams.
    def chunks(total: int):
        yield b'{"feedback": ['
        sent = 0
        item = json.dumps({"request_id": "r" * 32, "label": 1}).encode() + b","
        while sent < total:
            yield item * 100
            sent += len(item) * 100
        yield b'{"request_id": "x", "label": 1}]}'

    r = client.post(
        f"{url}/feedback",
        content=chunks(1_200_000),
        headers={"content-type": "application/json", **FEEDBACK},
    )
    assert r.status_code == 413, r.text
    assert "limit of 1048576 bytes for /feedback" in r.json()["detail"]

    r = client.post(f"{url}/admin/weights", content=b" " * 70_000 + b"{}", headers=ADMIN)
    assert r.status_code == 413 and "65536 bytes" in r.json()["detail"], r.text
    assert client.post(f"{url}/predict", json={"features": [full[0]]}).status_code == 200


def test_hostile_bodies_are_4xx_and_the_app_keeps_serving(url, data, client):
    X, _ = data
    n = X.shape[1]
    good = X.iloc[0].tolist()
    row = ",".join(str(v) for v in good[1:])
    deep = b"[" * 10_000 + b"]" * 10_000
    cases = [
        ("/predict", b'{"features": ' + deep + b"}", 400, "deeper than 32 levels"),
        ("/invocations", b'{"instances": ' + deep + b"}", 400, "deeper than 32 levels"),
        (
            "/predict",
            ('{"features": [[' + "9" * 400 + "," + row + "]]}").encode(),
            422,
            "too large",
        ),
        ("/predict", ('{"features": [[3.5e38,' + row + "]]}").encode(), 422, "too large"),
        ("/predict", ('{"features": [[1e308,' + row + "]]}").encode(), 422, "too large"),
        (
            "/predict",
            json.dumps({"features": [[[v, v] for v in good]]}).encode(),
            422,
            "not a number",
        ),
        (
            "/predict",
            json.dumps({"features": {c: X[c].iloc[:3].tolist() for c in X.columns}}).encode(),
            422,
            "not a number",
        ),
        (
            "/invocations",
            json.dumps(
                {"dataframe_split": {"columns": [[c] for c in X.columns], "data": [good]}}
            ).encode(),
            422,
            "not a string",
        ),
        (
            "/predict",
            b'{"features": [' + json.dumps(good).encode() + b'], "routing_key": "a\\ud800"}',
            422,
            "routing_key",
        ),
        (
            "/predict",
            json.dumps({"features": [good], "model_version": [1]}).encode(),
            422,
            "model_version",
        ),
    ]
    for path, body, status, fragment in cases:
        r = post_json(client, url, path, body)
        assert r.status_code == status, (path, body[:60], r.text)
        assert fragment in r.json()["detail"], r.text
    r = post_json(client, url, "/feedback", b'{"feedback": ' + deep + b"}", FEEDBACK)
    assert r.status_code == 400 and "deeper than 32 levels" in r.json()["detail"], r.text
    assert n == 30
    r = client.post(f"{url}/predict", json={"features": [good]})
    assert r.status_code == 200, r.text
    assert serve.status().applications[APP].status == "RUNNING"


def test_admin_weights_refuse_non_finite_and_out_of_range_values(url, data, client):
    X, _ = data
    before = client.get(f"{url}/admin/rollout", headers=ADMIN).json()["weights"]
    for body, fragment in [
        (b'{"blue": NaN}', "weight of blue"),
        (b'{"blue": Infinity, "green": 1}', "weight of blue"),
        (b'{"blue": 1e308}', "weight of blue"),
        (b'{"blue": -1, "green": 2}', "weight of blue"),
        (b'{"purple": 1}', "unknown slots"),
        (b'{"blue": 0, "green": 0}', "positive weight"),
    ]:
        r = post_json(client, url, "/admin/weights", body, ADMIN)
        assert r.status_code == 422, (body, r.text)
        assert fragment in r.json()["detail"], r.text
    r = post_json(client, url, "/admin/rollout/promote", b'{"reason": 1}', ADMIN)
    assert r.status_code == 422 and "reason" in r.json()["detail"], r.text
    assert client.get(f"{url}/admin/rollout", headers=ADMIN).json()["weights"] == before
    r = client.post(f"{url}/predict", json={"features": [X.iloc[0].tolist()]})
    assert r.status_code == 200, r.text


def test_feedback_needs_its_own_token(url, data, client):
    X, y = data
    r = client.post(f"{url}/predict", json={"features": [X.iloc[3].tolist()]})
    item = {"request_id": r.json()["request_id"], "label": int(y.iloc[3])}
    assert client.post(f"{url}/feedback", json=item).status_code == 401
    assert client.post(f"{url}/feedback", json=item, headers=ADMIN).status_code == 403
    wrong = {"Authorization": "Bearer " + "w" * 40}
    assert client.post(f"{url}/feedback", json=item, headers=wrong).status_code == 403
    r = client.post(
        f"{url}/feedback", json=item, headers={**FEEDBACK, "X-Label-Source": "bad source!"}
    )
    assert r.status_code == 422 and "X-Label-Source" in r.json()["detail"]
    r = client.post(f"{url}/feedback", json=item, headers={**FEEDBACK, "X-Label-Source": "lab-1"})
    assert r.status_code == 200, r.text
    assert sum(r.json().values()) == 1


def test_unauthenticated_monitor_status_carries_no_error_text(url, client):
    public = client.get(f"{url}/monitor/status")
    admin = client.get(f"{url}/monitor/status", headers=ADMIN)
    assert public.status_code == 200 and admin.status_code == 200
    # Same keys either way; only error strings differ.
    assert set(public.json()) == set(admin.json())
    assert "Traceback" not in public.text


def test_a_slow_body_is_cut_off_while_other_requests_are_answered(url, data):
    X, _ = data
    u = urlparse(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=30)
    body = json.dumps({"features": [X.iloc[0].tolist()]}).encode()
    sock.sendall(
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:5]
    )
    got = bytearray()
    answered = []
    stop = threading.Event()

    def trickle():
        # One byte a second, far slower than any real client; stops when the server answers
        # or closes.
        for b in body[5:-1]:
            if stop.wait(1.0):
                return
            try:
                sock.sendall(bytes([b]))
            except OSError:
                return

    def others():
        with httpx.Client(timeout=10) as c:
            while not stop.is_set():
                r = c.post(f"{url}/predict", json={"features": [X.iloc[1].tolist()]})
                answered.append(r.status_code)

    threads = [threading.Thread(target=trickle), threading.Thread(target=others)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
            head, sep, rest = bytes(got).partition(b"\r\n\r\n")
            length = [h for h in head.lower().split(b"\r\n") if h.startswith(b"content-length")]
            if sep and length and len(rest) >= int(length[0].split(b":")[1]):
                break
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        for t in threads:
            t.join()
        sock.close()
    # Cut off after the body timeout (2 s here), long before the body would have finished.
    assert elapsed < BODY_TIMEOUT_S + 5, elapsed
    assert got.startswith(b"HTTP/1.1 408"), bytes(got[:200])
    assert b"not received within 2 s" in got or b"timed out" in got, bytes(got)
    assert answered and set(answered) == {200}, answered


def test_two_router_replicas_and_one_dying_fails_no_request(url, data):
    X, _ = data
    router = serve.status().applications[APP].deployments["Router"]
    assert router.replica_states.get("RUNNING") == 2, router.replica_states
    names = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == "serve" and f"{APP}#Router#" in a["name"]
    ]
    assert len(names) == 2, names
    # Let the proxy see both replicas before one goes.
    with httpx.Client(timeout=30) as c:
        for _ in range(10):
            assert c.post(f"{url}/predict", json={"features": [X.iloc[2].tolist()]}).is_success
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
    statuses = []
    with httpx.Client(timeout=30) as c:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            statuses.append(c.get(f"{url}/health").status_code)
    assert statuses and set(statuses) == {200}, statuses
    wait_until(
        lambda: (
            serve.status().applications[APP].deployments["Router"].replica_states.get("RUNNING")
            == 2
        ),
        120,
        what="the Router replaced",
    )


def test_pinned_requests_are_answered_but_left_out_of_the_canary_numbers(url, data, client):
    """A client that pins a version must not choose the canary's evidence: its requests are
    answered and metered, and recorded with "pinned": true, which the monitor leaves out of
    the per-version numbers the analysis reads."""
    X, _ = data
    monitor = serve.get_deployment_handle("DriftMonitor", APP)
    version = client.get(f"{url}/health").json()["champion"]
    since = time.time()
    rows_before = client.get(f"{url}/monitor/status").json()["records"]["rows"]
    row = {"features": [X.iloc[4].tolist()]}
    for _ in range(4):
        r = client.post(f"{url}/predict", json={**row, "model_version": version})
        assert r.status_code == 200 and r.json()["model_version"] == version, r.text
    for _ in range(3):
        r = client.post(f"{url}/predict", json=row, headers={"X-Model-Version": version})
        assert r.status_code == 200, r.text
    for _ in range(5):
        assert client.post(f"{url}/predict", json=row).status_code == 200
    # Every record (pinned ones feed the drift windows) has reached the monitor.
    wait_until(
        lambda: client.get(f"{url}/monitor/status").json()["records"]["rows"] >= rows_before + 12,
        30,
        what="12 records at the monitor",
    )
    stats = monitor.version_stats.remote([version], since).result(timeout_s=30)[version]
    assert stats["requests"] == 5, stats


def test_labels_carry_their_source_and_pinned_requests_are_no_canary_evidence(
    url, champion, data, client
):
    """A label source that posts the opposite of every answer (feedback poisoning's first
    step): its labels reach the monitor's windows under its name (X-Label-Source), and the
    requests that pinned the champion stay out of the labelled canary numbers."""
    X, _ = data
    feedback = {**FEEDBACK, "X-Label-Source": "mallory"}
    since = time.time()
    rows_before = client.get(f"{url}/monitor/status").json()["records"]["rows"]
    ids = []
    for i in range(30):
        body = {"features": [X.iloc[i].tolist()]}
        if i % 3 == 0:
            body["model_version"] = champion
        r = client.post(f"{url}/predict", json=body)
        assert r.status_code == 200, r.text
        ids.append((r.json()["request_id"], r.json()["predictions"][0]))
    wait_until(
        lambda: client.get(f"{url}/monitor/status").json()["records"]["rows"] >= rows_before + 30,
        60,
        what="records at the monitor",
    )
    items = [{"request_id": rid, "label": 1 - int(p)} for rid, p in ids]
    r = client.post(f"{url}/feedback", json=items, headers=feedback)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] + r.json()["pending"] == 30, r.json()

    def mallory_accepted():
        sources = client.get(f"{url}/monitor/status").json()["feedback_sources"]
        return sources.get("mallory", {}).get("accepted") == 30

    wait_until(mallory_accepted, 30, what="labels joined")
    status = client.get(f"{url}/monitor/status").json()
    assert status["feedback_sources"]["mallory"]["accepted"] == 30, status["feedback_sources"]
    assert status["versions"][champion]["window_sources"]["mallory"] == 30, status["versions"]
    monitor = serve.get_deployment_handle("DriftMonitor", APP)
    stats = monitor.version_stats.remote([champion], since).result(timeout_s=30)[champion]
    # 10 of the 30 requests pinned the champion: they are not canary evidence.
    assert stats["requests"] == 20 and stats["errors"] == 0, stats
    assert stats["labelled"] == 20 and stats["correct"] == 0, stats


# ---- the feedback path and the DriftMonitor ------------------------------------------------
def monitor_status(url: str) -> dict:
    r = httpx.get(f"{url}/monitor/status", timeout=30)
    r.raise_for_status()
    return r.json()


def test_feedback_batch_joins_known_ids_and_counts_the_rest(url, champion, data):
    X, y = data
    before = monitor_status(url)
    version = before["champion"] or champion
    rows0 = before["records"]["rows"]
    labelled0 = before["versions"].get(version, {}).get("labelled_seen", 0)
    accepted0 = before["feedback"]["accepted"]
    with httpx.Client(timeout=30) as c:
        ids = []
        for i in range(5):
            r = c.post(f"{url}/predict", json={"features": [X.iloc[i].tolist()]})
            assert r.status_code == 200, r.text
            ids.append(r.json()["request_id"])
        two = c.post(f"{url}/predict", json={"features": X.iloc[5:7].values.tolist()}).json()
        # Records reach the monitor in batches, off the request path: wait for them.
        wait_until(
            lambda: monitor_status(url)["records"]["rows"] >= rows0 + 7,
            30,
            what="records at the monitor",
        )
        batch = [{"request_id": rid, "label": int(y.iloc[i])} for i, rid in enumerate(ids)]
        batch += [
            {"request_id": two["request_id"], "label": [int(y.iloc[5])]},  # 1 label for 2 rows
            {"request_id": "never-issued", "label": 1},
            {"request_id": ids[0], "label": 0},  # labelled already: the first label stands
        ]
        r = c.post(f"{url}/feedback", json=batch, headers=FEEDBACK)
        assert r.status_code == 200, r.text
        counts = r.json()
        assert counts["accepted"] == 5 and counts["invalid"] == 1 and counts["duplicate"] == 1
        # An id the monitor has not seen may still be on its way: it waits, it is not lost.
        assert counts["pending"] + counts["unknown"] == 1

        r = c.post(
            f"{url}/feedback", json={"request_id": two["request_id"], "label": 1}, headers=FEEDBACK
        )
        assert r.json()["invalid"] == 1
        r = c.post(
            f"{url}/feedback",
            json={"request_id": two["request_id"], "label": [int(v) for v in y.iloc[5:7]]},
            headers=FEEDBACK,
        )
        assert r.json()["accepted"] == 1
        r = c.post(f"{url}/feedback", json=[{"label": 1}], headers=FEEDBACK)
        assert r.status_code == 422 and "request_id" in r.json()["detail"]

    status = monitor_status(url)
    # 5 single rows + 1 two-row request
    assert status["versions"][version]["labelled_seen"] == labelled0 + 7
    assert status["feedback"]["accepted"] == accepted0 + 6


def _monitor_replica() -> str:
    """The name of the DriftMonitor's one replica actor (GCS's named-actor list)."""
    names = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == "serve" and f"{APP}#DriftMonitor#" in a["name"]
    ]
    assert len(names) == 1, names
    return names[0]


def test_killed_drift_monitor_fails_no_prediction_and_comes_back(url, champion, data):
    X, y = data
    predictions: list[int] = []
    feedback: list[int] = []
    stop = threading.Event()

    def traffic(k: int) -> None:
        i = k
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                r = c.post(f"{url}/predict", json={"features": [X.iloc[i % len(X)].tolist()]})
                predictions.append(r.status_code)
                if r.status_code == 200:
                    item = {"request_id": r.json()["request_id"], "label": int(y.iloc[i % len(X)])}
                    fb = c.post(f"{url}/feedback", json=item, headers=FEEDBACK)
                    feedback.append(fb.status_code)
                i += 3

    rows0 = monitor_status(url)["records"]["rows"]
    threads = [threading.Thread(target=traffic, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    try:
        wait_until(
            lambda: monitor_status(url)["records"]["rows"] > rows0 + 30,
            60,
            what="monitor receiving",
        )
        killed = _monitor_replica()
        ray.kill(ray.get_actor(killed, namespace="serve"), no_restart=False)
        # Serve replaces the replica; the new one starts from empty windows and fills again.
        wait_until(
            lambda: _monitor_replica() != killed and monitor_status(url)["records"]["rows"] > 0,
            120,
            what="a new DriftMonitor replica receiving records",
        )
        wait_until(
            lambda: monitor_status(url)["feedback"]["accepted"] > 10, 60, what="feedback joined"
        )
        n = len(predictions)
        wait_until(lambda: len(predictions) > n + 30, 60, what="traffic after the restart")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert set(predictions) == {200}, {s: predictions.count(s) for s in set(predictions)}
    # Feedback sent while no monitor was up is refused with a retryable 503, never a 500.
    assert set(feedback) <= {200, 503}, {s: feedback.count(s) for s in set(feedback)}


# ---- fuzzing --------------------------------------------------------------------------------
# Every route of the app's own OpenAPI document, fuzzed from the outside (schemathesis), with
# and without credentials, in positive and negative generation: no response is a 5xx and no
# replica restarts. The hand-made bodies above are the trust-boundary review; this finds what
# nobody thought to write down. The same check against `make run` (README, "Security and
# failure model"):
#
#     .venv/bin/st run http://127.0.0.1:8000/openapi.json --checks not_a_server_error \
#         --max-examples 50 -H "Authorization: Bearer $(cat .mlops/admin_token)"

FUZZ_EXAMPLES = 25  # per operation, per generation mode, per credential: about 2 minutes here


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


def test_fuzzing_every_route_gives_no_5xx_and_no_replica_restart(url, champion):
    """Last in the module: the fuzzer's authorized calls move weights and aliases."""
    schemathesis = pytest.importorskip("schemathesis", reason="test extra: pip install -e '.[dev]'")
    http = url
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
            max_examples=FUZZ_EXAMPLES,
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
