"""LoadedModel answers exactly what the estimator's own predict / predict_proba answer, with
one pass over the model where scikit-learn defines predict as argmax of predict_proba."""

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.svm import SVC

from configs.settings import ModelLoadingConfig
from deployments.model_server import LoadedModel
from training import safe_load
from training.search import build_estimator

CONFIGS = [
    {"family": "logistic_regression", "lr_C": 1.0},
    {"family": "random_forest", "rf_n_estimators": 20, "rf_max_depth": 4, "rf_min_samples_leaf": 1},
    {
        "family": "gradient_boosting",
        "gb_n_estimators": 10,
        "gb_learning_rate": 0.1,
        "gb_max_depth": 2,
    },
]


@pytest.fixture(scope="module")
def data():
    return load_breast_cancer(return_X_y=True)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["family"])
def test_one_pass_families_match_predict(config, data):
    X, y = data
    model = build_estimator({"seed": 0, **config}).fit(X, y)
    loaded = LoadedModel("1", model)
    assert loaded._proba_only
    pred, proba = loaded.predict(X)
    np.testing.assert_array_equal(pred, model.predict(X))
    np.testing.assert_allclose(proba, model.predict_proba(X))


def test_other_estimators_get_their_own_predict(data):
    X, y = data
    # SVC's predict is not argmax of its Platt-scaled probabilities: it must not be derived.
    model = SVC(probability=True, random_state=0).fit(X[:200], y[:200])
    loaded = LoadedModel("1", model)
    assert not loaded._proba_only
    pred, _ = loaded.predict(X)
    np.testing.assert_array_equal(pred, model.predict(X))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["family"])
def test_every_family_passes_the_load_time_estimator_check(config, data):
    """training.safe_load refuses classes outside the families' own: every family's pipeline,
    as the search builds it, must be accepted (and round-trip through skops with only the
    types the deployment trusts)."""
    import skops.io

    X, y = data
    model = build_estimator({"seed": 0, **config}).fit(X, y)
    cfg = ModelLoadingConfig()
    safe_load.check_estimator(model, safe_load.allowed_estimators(cfg))
    blob = skops.io.dumps(model)
    assert set(skops.io.get_untrusted_types(data=blob)) <= set(safe_load.trusted_types(cfg))
