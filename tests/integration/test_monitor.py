"""The DriftMonitor behind real HTTP: feedback joined by request id, counts for what cannot be
joined, and a monitor that dies under traffic without failing a prediction."""

import threading

import httpx
import pytest
import ray

from tests.conftest import FEEDBACK_TOKEN
from tests.helpers import wait_until

pytestmark = pytest.mark.ray
APP = "raymlops-monitor"
FEEDBACK = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}


def monitor_status(url: str) -> dict:
    r = httpx.get(f"{url}/monitor/status", timeout=30)
    r.raise_for_status()
    return r.json()


@pytest.fixture(scope="module")
def url(module_app, trained):
    """One app for both tests (a deploy costs about 15 s here): the counting test first, on
    fresh windows; then the monitor is killed under traffic."""
    return module_app(name=APP)


def test_feedback_batch_joins_known_ids_and_counts_the_rest(url, champion, data):
    X, y = data
    with httpx.Client(timeout=30) as c:
        ids = []
        for i in range(5):
            r = c.post(f"{url}/predict", json={"features": [X.iloc[i].tolist()]})
            assert r.status_code == 200, r.text
            ids.append(r.json()["request_id"])
        two = c.post(f"{url}/predict", json={"features": X.iloc[5:7].values.tolist()}).json()
        # Records reach the monitor in batches, off the request path: wait for them.
        wait_until(
            lambda: monitor_status(url)["records"]["rows"] >= 7, 30, what="records at the monitor"
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
    version = status["champion"] or champion
    assert status["versions"][version]["labelled_seen"] == 7  # 5 single rows + 1 two-row
    assert status["feedback"]["accepted"] == 6


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

    threads = [threading.Thread(target=traffic, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    try:
        wait_until(
            lambda: monitor_status(url)["records"]["rows"] > 30, 60, what="monitor receiving"
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
