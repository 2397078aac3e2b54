"""The closed loop, end to end, with the story of `make demo` (monitoring.demo.run_story):

stationary labelled traffic triggers nothing; a concept shift is detected by the accuracy
detector, Ray Tune retrains on the feedback, a challenger that beats the champion on the new
concept is registered and promoted through the canary; a covariate shift with the concept
unchanged retrains again, but that winner is not better and the champion stays.

Real Ray (the session's cluster), real MLflow, real HTTP; small sizes (monitoring.demo's
policies) so that it fits in a few minutes."""

import pytest

from monitoring.demo import DEMO_POLICIES, run_story
from tests.conftest import ADMIN_TOKEN, FEEDBACK_TOKEN
from training import registry

pytestmark = pytest.mark.ray
NAME = "e2e_closed_loop"


@pytest.fixture
def first_model(trained, mlflow_uri, training_config):
    """The session's trained champion registered again under a name of its own (the story
    moves that name's aliases): same run, artifacts and reference sample, no second search."""
    import mlflow

    client = registry.get_client(mlflow_uri)
    source = client.get_model_version(training_config.model_name, trained.version)
    registry.use_tracking_uri(mlflow_uri)
    version = str(mlflow.register_model(source.source, NAME, tags=source.tags).version)
    registry.set_alias(client, NAME, registry.CHAMPION, version)
    cfg = training_config.model_copy(update={"model_name": NAME, **DEMO_POLICIES["training"]})
    return cfg, version


def test_drift_retrains_promotes_and_a_second_shift_keeps_the_champion(
    serve_app, first_model, mlflow_uri
):
    cfg, v1 = first_model
    policies = {k: v for k, v in DEMO_POLICIES.items() if k != "training"}
    url = serve_app(name="raymlops-e2e", model_name=NAME, training=cfg, **policies)

    result = run_story(url, ADMIN_TOKEN, FEEDBACK_TOKEN, time_bound_s=600, stationary_s=20)

    stationary, shift, after, covariate = result["phases"]
    for phase in result["phases"]:
        assert phase["failures"] == 0, phase  # no request failed, whatever the loop was doing
    assert stationary["accuracy"] > 0.9
    # After promotion the client sees the new concept predicted far better than before.
    assert after["accuracy"] > shift["accuracy"] + 0.2, result["phases"]
    champion0, champion1 = result["champions"]
    assert champion0 == v1 and champion1 != v1

    client = registry.get_client(mlflow_uri)
    assert registry.alias_version(client, NAME, registry.CHAMPION) == champion1
    assert registry.alias_version(client, NAME, registry.CHALLENGER) is None
    promoted = client.get_model_version(NAME, champion1)
    assert "mlops.promoted_at" in promoted.tags and "mlops.trigger" in promoted.tags
    assert "accuracy" in promoted.tags["mlops.trigger"]
    # Every retraining left a parent run tagged with its trigger and decision; the last one
    # (the covariate shift) was not better and registered nothing.
    exp = client.get_experiment_by_name(cfg.experiment_name)
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"attributes.run_name = 'retrain-{NAME}' and "
        f"tags.`mlops.champion_version` = '{champion1}'",
    )
    assert runs and all("mlops.trigger" in r.data.tags for r in runs)
    assert any(r.data.tags["mlops.decision"].startswith("not registered") for r in runs)
