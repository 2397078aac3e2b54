"""LoadedModel answers exactly what the estimator's own predict / predict_proba answer, with
one pass over the model where scikit-learn defines predict as argmax of predict_proba; a model
we did not train answers what `mlflow.pyfunc.load_model(uri).predict` answers on the same rows.
"""

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import Model, infer_signature
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import Ridge
from sklearn.svm import SVC

from configs.settings import ModelLoadingConfig
from deployments.model_server import LoadedModel, _split, to_rows
from training import registry, safe_load
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


# ---- models we did not train (issue 13) ----------------------------------------------------


def served(path, cfg: ModelLoadingConfig) -> LoadedModel:
    """Load a saved model as a model server does: the signature from its MLmodel file."""
    sig = Model.load(str(path)).signature
    inputs = registry.schema_dicts(sig.inputs)
    model = safe_load.load_served(str(path), cfg)
    return LoadedModel(
        "7",
        model.model,
        flavor=model.flavor,
        feature_names=registry.schema_feature_names(inputs),
        input_schema=inputs,
    )


def mlflow_predict(path, frame: pd.DataFrame):
    return mlflow.pyfunc.load_model(str(path)).predict(frame)


def test_sklearn_regressor_answers_numbers_without_probabilities(tmp_path):
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    model = Ridge(alpha=0.5).fit(X, y)
    path = tmp_path / "ridge"
    mlflow.sklearn.save_model(
        model,
        str(path),
        serialization_format="skops",
        signature=infer_signature(X, y),
        pip_requirements=["scikit-learn"],
    )
    cfg = ModelLoadingConfig(allowed_estimators=["sklearn.linear_model._ridge.Ridge"])
    loaded = served(path, cfg)
    assert loaded.flavor == "sklearn" and not loaded.has_probabilities
    rows = X.iloc[:40]
    answers = _split(loaded, rows.to_numpy(), [15, 25])
    assert [len(a["predictions"]) for a in answers] == [15, 25]
    assert all("probabilities" not in a for a in answers)
    got = answers[0]["predictions"] + answers[1]["predictions"]
    assert all(type(v) is float for v in got)
    np.testing.assert_allclose(got, mlflow_predict(path, rows))


def test_lightgbm_classifier_loads_natively_with_probabilities(tmp_path):
    import lightgbm

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(X, y)
    path = tmp_path / "lgbm"
    mlflow.lightgbm.save_model(
        model,
        str(path),
        signature=infer_signature(X, model.predict(X)),
        pip_requirements=["lightgbm"],
    )
    with pytest.raises(safe_load.ModelRefused, match="allowed_flavors"):
        served(path, ModelLoadingConfig())
    loaded = served(path, ModelLoadingConfig(allowed_flavors=["sklearn", "lightgbm"]))
    assert loaded.flavor == "lightgbm" and loaded.has_probabilities
    rows = X.iloc[:50]
    (answer,) = _split(loaded, rows.to_numpy(), [50])
    assert answer["predictions"] == mlflow_predict(path, rows).tolist()
    np.testing.assert_allclose(answer["probabilities"], model.predict_proba(rows))


class Scorer(mlflow.pyfunc.PythonModel):
    """A team's own model: a score from the columns, answered as ``kind`` says."""

    def __init__(self, kind: str):
        self.kind = kind

    def predict(self, context, model_input, params=None):
        score = model_input["a"] * 2.0 + model_input["n"]
        if self.kind == "frame":
            return pd.DataFrame({"score": score, "label": np.where(score > 1, "high", "low")})
        if self.kind == "series":
            return score
        if self.kind == "ndarray":
            return score.to_numpy()
        return pd.DataFrame({"score": score})  # one column: plain values


@pytest.fixture(scope="module")
def team_frame():
    rng = np.random.default_rng(0)
    return pd.DataFrame({"a": rng.normal(size=30), "n": rng.integers(0, 5, 30).astype(np.int64)})


@pytest.mark.parametrize("kind", ["frame", "series", "ndarray", "one_column"])
def test_pyfunc_answers_what_its_predict_returns(kind, team_frame, tmp_path):
    path = tmp_path / kind
    model = Scorer(kind)
    signature = infer_signature(team_frame, model.predict(None, team_frame))
    mlflow.pyfunc.save_model(
        str(path), python_model=model, signature=signature, pip_requirements=["pandas"]
    )
    loaded = served(path, ModelLoadingConfig(allowed_flavors=["python_function"]))
    assert loaded.flavor == "python_function" and not loaded.has_probabilities
    # The router sends float rows: the long column "n" must reach the model as integers,
    # which MLflow's schema enforcement requires.
    X = team_frame.to_numpy(dtype=np.float64)
    answers = _split(loaded, X, [10, 20])
    got = answers[0]["predictions"] + answers[1]["predictions"]
    want = mlflow_predict(path, team_frame)
    if kind == "frame":
        assert got == want.to_dict(orient="records")
        assert got[0].keys() == {"score", "label"}
    else:
        np.testing.assert_allclose(got, np.asarray(want).ravel())
        assert all(type(v) is float for v in got)


def test_pyfunc_refuses_a_fraction_in_an_integer_column(team_frame, tmp_path):
    path = tmp_path / "m"
    model = Scorer("series")
    signature = infer_signature(team_frame, model.predict(None, team_frame))
    mlflow.pyfunc.save_model(
        str(path), python_model=model, signature=signature, pip_requirements=["pandas"]
    )
    loaded = served(path, ModelLoadingConfig(allowed_flavors=["python_function"]))
    with pytest.raises(ValueError, match="column 'n' takes integers"):
        loaded.predict(np.array([[0.5, 1.5]]))


def test_tensor_signature_gets_an_array(tmp_path):
    X, y = load_diabetes(return_X_y=True)
    model = Ridge().fit(X, y)
    path = tmp_path / "t"
    mlflow.sklearn.save_model(
        model,
        str(path),
        serialization_format="skops",
        signature=infer_signature(X, y),
        pip_requirements=["scikit-learn"],
    )
    loaded = served(path, ModelLoadingConfig(allowed_flavors=["python_function"]))
    assert loaded.feature_names == [f"x{j}" for j in range(X.shape[1])]
    (answer,) = _split(loaded, X[:12], [12])
    np.testing.assert_allclose(
        answer["predictions"], mlflow.pyfunc.load_model(str(path)).predict(X[:12])
    )


def test_to_rows_refuses_an_answer_of_the_wrong_length():
    with pytest.raises(ValueError, match="answered 2 predictions for 3 rows"):
        to_rows(np.array([1.0, 2.0]), 3)
    assert to_rows(np.array([[1, 2], [3, 4]]), 2) == [[1, 2], [3, 4]]
    assert to_rows(pd.Series(["a", "b"]), 2) == ["a", "b"]


# ---- a scikit-learn Pipeline with a string (categorical) column ------------------------------
PIPELINE_ESTIMATORS = [
    "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.linear_model._logistic.LogisticRegression",
]


@pytest.fixture(scope="module")
def color_pipeline(tmp_path_factory):
    """A team's pipeline: OneHotEncoder on "color", the numeric columns passed through, logged
    with ``infer_signature`` on a DataFrame (so "color" is a ``string`` column)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "color": rng.choice(["red", "green", "blue"], n),
            "k": rng.integers(0, 5, n).astype(np.int64),
        }
    )
    y = ((frame["color"] == "red") ^ (frame["x"] > 0)).astype(int)
    encode = ColumnTransformer(
        [("oh", OneHotEncoder(handle_unknown="ignore"), ["color"])], remainder="passthrough"
    )
    model = Pipeline([("pre", encode), ("clf", LogisticRegression())]).fit(frame, y)
    path = tmp_path_factory.mktemp("color") / "model"
    mlflow.sklearn.save_model(
        model,
        str(path),
        serialization_format="skops",
        signature=infer_signature(frame, model.predict(frame)),
        pip_requirements=["scikit-learn"],
    )
    return path, frame


@pytest.mark.parametrize("flavor", ["sklearn", "python_function"])
def test_a_string_pipeline_answers_what_pyfunc_predict_answers(flavor, color_pipeline):
    from deployments import schemas

    path, frame = color_pipeline
    cfg = ModelLoadingConfig(allowed_flavors=[flavor], allowed_estimators=PIPELINE_ESTIMATORS)
    loaded = served(path, cfg)
    assert loaded.flavor == flavor and loaded.feature_names == ["x", "color", "k"]
    info = {"feature_names": loaded.feature_names, "input_schema": loaded.input_schema}
    rows = frame.iloc[:40]
    # What the router builds from the JSON rows: an object matrix of str and float cells.
    X = schemas.to_matrix(rows.to_dict(orient="records"), loaded.feature_names, 100, strings=[1])
    assert schemas.string_columns(info) == [1]
    answers = _split(loaded, X, [15, 25])  # two requests in one pass, as a batch
    got = answers[0]["predictions"] + answers[1]["predictions"]
    assert got == mlflow_predict(path, rows).tolist()
    assert len(set(got)) == 2  # both classes: the answers depend on the rows
    if flavor == "sklearn":
        # The estimator is called on the named columns (its ColumnTransformer selects
        # "color" by name) and answers probabilities too.
        probabilities = answers[0]["probabilities"] + answers[1]["probabilities"]
        np.testing.assert_allclose(probabilities, loaded.model.predict_proba(rows))
    # An unseen category is the model's business (handle_unknown="ignore"), not an error.
    unseen = schemas.to_matrix([[0.1, "purple", 2]], loaded.feature_names, 10, strings=[1])
    (answer,) = _split(loaded, unseen, [1])
    frame_unseen = pd.DataFrame({"x": [0.1], "color": ["purple"], "k": [2]})
    assert answer["predictions"] == mlflow_predict(path, frame_unseen).tolist()
