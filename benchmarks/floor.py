"""Ray Serve's own floor: the cheapest apps of the same shape as ours, measured in the same run.

- ``echo``: one deployment, a plain Starlette ``__call__`` ingress (no FastAPI) that reads the
  body and answers a constant JSON object with the body's length;
- ``chain``: an ingress of the same kind that passes the raw body through a DeploymentHandle
  to an echo deployment and answers what it got back: our Router -> ModelServer hop with
  nothing of ours on it.

Both take any path (``/predict`` included) under route prefix "/", like our app, and the CPUs,
replica counts and request limits serve_config.yaml gives our Router (the ingress) and ``blue``
(the deployment behind the handle), so the floor differs from our stack by our code only.
Imported by Serve's replicas by reference: the harness's driver runs from the project root,
which Ray puts on the workers' sys.path.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import Response

APP_NAME = "floor"
KINDS = ("echo", "chain")


def _answer(n: int) -> bytes:
    return b'{"predictions":[0],"bytes":%d}' % n


@serve.deployment(name="Echo")
class Echo:
    """HTTP ingress: reads the body, answers ``{"predictions":[0],"bytes":<its length>}``."""

    async def __call__(self, request: Request) -> Response:
        body = await request.body()
        return Response(_answer(len(body)), media_type="application/json")


@serve.deployment(name="ChainEcho")
class ChainEcho:
    """Behind the handle: takes the raw body, answers the JSON bytes `Echo` would."""

    async def __call__(self, body: bytes) -> bytes:
        return _answer(len(body))


@serve.deployment(name="ChainIngress")
class ChainIngress:
    """HTTP ingress: reads the body, passes the bytes to `ChainEcho` through a handle, answers
    what it got back."""

    def __init__(self, echo: DeploymentHandle):
        self._echo = echo

    async def __call__(self, request: Request) -> Response:
        body = await request.body()
        out = await self._echo.remote(body)
        return Response(out, media_type="application/json")


def _opts(conf: dict[str, Any], *, ingress: bool) -> dict[str, Any]:
    """Deployment options of a floor deployment from our deployment's config (serve_config.yaml
    `deployments:` entry): its CPUs and request limits; a fixed replica count (an autoscaled
    deployment's minimum)."""
    out: dict[str, Any] = {}
    for key in ("ray_actor_options", "max_ongoing_requests", "max_queued_requests"):
        if key in conf:
            out[key] = conf[key]
    auto = conf.get("autoscaling_config")
    out["num_replicas"] = auto["min_replicas"] if auto else conf.get("num_replicas", 1)
    if ingress:
        out.pop("max_queued_requests", None)
    return out


def build(kind: str, deployments: dict[str, dict[str, Any]]):
    """The floor app ``kind`` (`KINDS`) with the options of our ``Router`` (ingress) and
    ``blue`` (behind the handle) from ``deployments`` (`stack.deployment_options()`)."""
    ingress = _opts(deployments.get("Router", {}), ingress=True)
    backend = _opts(deployments.get("blue", {}), ingress=False)
    if kind == "echo":
        return Echo.options(**ingress).bind()
    if kind == "chain":
        return ChainIngress.options(**ingress).bind(ChainEcho.options(**backend).bind())
    raise ValueError(f"unknown floor app {kind!r}; one of {KINDS}")


def options_summary(deployments: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The options each floor deployment gets (for the report)."""
    return {
        "ingress": _opts(deployments.get("Router", {}), ingress=True),
        "backend": _opts(deployments.get("blue", {}), ingress=False),
    }
