"""Training really searches with Ray Tune and registers in a real MLflow registry."""

import mlflow
import pandas as pd
import pytest

from training import registry
from training.data import load_dataset

pytestmark = pytest.mark.ray


def test_training_registers_champion_with_artifacts(trained, mlflow_uri, training_config):
    client = registry.get_client(mlflow_uri)
    name = training_config.model_name
    assert trained.version is not None
    assert registry.alias_version(client, name, registry.CHAMPION) == trained.version
    assert trained.test_accuracy >= training_config.min_score

    info = registry.version_info(client, name, trained.version)
    X, y = load_dataset(training_config.dataset)
    assert info.feature_names == list(X.columns)
    assert sorted(info.classes) == sorted(y.unique().tolist())
    assert info.run_id == trained.parent_run_id
    assert info.metrics["test_accuracy"] == pytest.approx(trained.test_accuracy)

    # Every trial is a child run of the parent, with its params and score.
    exp = client.get_experiment_by_name(training_config.experiment_name)
    children = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{trained.parent_run_id}'"
    )
    assert len(children) == training_config.num_samples
    assert all("cv_accuracy" in r.data.metrics and "family" in r.data.params for r in children)
    assert {r.data.params["family"] for r in children} <= set(training_config.families)

    # The winner is logged with signature, input example, dataset and reference sample.
    run = client.get_run(trained.parent_run_id)
    assert run.inputs.dataset_inputs, "mlflow.log_input was not recorded"
    ref_path = mlflow.artifacts.download_artifacts(
        run_id=trained.parent_run_id,
        artifact_path=registry.REFERENCE_ARTIFACT,
        tracking_uri=mlflow_uri,
    )
    ref = pd.read_csv(ref_path)
    assert list(ref.columns) == list(X.columns) + [registry.LABEL_COLUMN]
    assert len(ref) == min(training_config.reference_sample_size, int(len(X) * 0.8))
    model_info = mlflow.models.get_model_info(registry.model_uri(name, trained.version))
    assert model_info.signature.inputs.input_names() == list(X.columns)
    assert model_info.saved_input_example_info is not None


def test_registered_model_loads_by_uri_and_matches_reported_accuracy(
    trained, mlflow_uri, training_config
):
    from sklearn.model_selection import train_test_split

    model = registry.load_model(mlflow_uri, training_config.model_name, trained.version)
    X, y = load_dataset(training_config.dataset)
    _, X_test, _, y_test = train_test_split(
        X, y, test_size=training_config.test_size, random_state=training_config.seed, stratify=y
    )
    assert (model.predict(X_test) == y_test).mean() == pytest.approx(trained.test_accuracy)
