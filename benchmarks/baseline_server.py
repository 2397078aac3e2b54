"""The baseline: what a user would write instead of our stack. One FastAPI app, one uvicorn
process (one worker), the same registered MLflow model, the same POST /predict contract.

    python -m benchmarks.baseline_server --tracking-uri sqlite:///... --model bench_expensive \
        --version 1 --port 18080 [--endpoint sync|async]

Body ``{"features": [[...], ...]}`` (rows of numbers in the model's feature order); answer
``{predictions, probabilities, model_name, model_version, request_id, latency_ms}``. Invalid
bodies are 422 (FastAPI / pydantic), more than ``--max-rows`` rows 413.

``--endpoint sync`` (default) is a plain ``def`` route, which FastAPI runs in its thread pool
(the documented way for blocking work such as a model call); ``async`` calls the model on the
event loop. Access logs are off (uvicorn's default is on; off favours the baseline).
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from typing import Annotated, Any

import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

Row = Annotated[list[Annotated[float, Field(allow_inf_nan=False)]], Field(min_length=1)]


class PredictRequest(BaseModel):
    features: Annotated[list[Row], Field(min_length=1)]


class PredictResponse(BaseModel):
    predictions: list[Any]
    probabilities: list[list[float]]
    model_name: str
    model_version: str
    request_id: str
    latency_ms: float


def create_app(
    tracking_uri: str, model_name: str, version: str, max_rows: int, endpoint: str
) -> FastAPI:
    from deployments.model_server import LoadedModel
    from training import registry

    # The model answers as a ModelServer replica answers (one predict_proba pass where that
    # gives predict too): the comparison is of the serving path, not of the model call.
    model = LoadedModel(version, registry.load_model(tracking_uri, model_name, version))
    client = registry.get_client(tracking_uri)
    n_features = len(registry.version_info(client, model_name, version).feature_names)
    app = FastAPI(title="baseline")

    def run(body: PredictRequest) -> dict[str, Any]:
        t0 = time.perf_counter()
        rows = body.features
        if len(rows) > max_rows:
            raise HTTPException(413, f"{len(rows)} rows; at most {max_rows} per request")
        if any(len(r) != n_features for r in rows):
            raise HTTPException(422, f"every row needs {n_features} features")
        X = np.asarray(rows, dtype=np.float64)
        pred, proba = model.predict(X)
        return {
            "predictions": pred.tolist(),
            "probabilities": proba.tolist(),
            "model_name": model_name,
            "model_version": version,
            "request_id": uuid.uuid4().hex,
            "latency_ms": round((time.perf_counter() - t0) * 1000, 3),
        }

    if endpoint == "async":

        @app.post("/predict", response_model=PredictResponse)
        async def predict_async(body: PredictRequest):
            return run(body)

    else:

        @app.post("/predict", response_model=PredictResponse)
        def predict(body: PredictRequest):
            return run(body)

    @app.get("/health")
    def health():
        return {"live": True, "ready": True, "model_name": model_name, "version": version}

    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.baseline_server")
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--version", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--max-rows", type=int, default=1024)
    p.add_argument("--endpoint", choices=["sync", "async"], default="sync")
    a = p.parse_args(argv)
    app = create_app(a.tracking_uri, a.model, a.version, a.max_rows, a.endpoint)
    uvicorn.run(app, host=a.host, port=a.port, workers=1, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
