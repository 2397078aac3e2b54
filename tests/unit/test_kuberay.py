"""KubeRay manifests: valid against the KubeRay v1.7.0 CRDs, renderable by kustomize, and with a
serveConfigV2 that is exactly what kuberay/generate.py makes of serve_config.yaml."""

from __future__ import annotations

import base64
import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kuberay import generate

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "kuberay"
CRDS = ROOT.parent / "shared" / "kuberay-crds"
RAY_KINDS = {"RayService", "RayJob", "RayCluster"}


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _manifests() -> list[dict]:
    docs = []
    for name in (
        "rayservice.yaml",
        "rayjob-train.yaml",
        "networkpolicy.yaml",
        "podmonitor.yaml",
        "servicemonitor.yaml",
    ):
        docs += _docs(KUBERAY / name)
    return docs


def _ray_docs() -> list[dict]:
    docs = _docs(KUBERAY / "rayservice.yaml") + _docs(KUBERAY / "rayjob-train.yaml")
    return [d for d in docs if d["kind"] in RAY_KINDS]


def _cluster_specs() -> list[tuple[str, dict]]:
    specs = []
    for doc in _ray_docs():
        spec = doc["spec"]
        cluster = spec.get("rayClusterConfig") or spec.get("rayClusterSpec") or spec
        specs.append((doc["metadata"]["name"], cluster))
    return specs


def _containers(obj, path="") -> list[tuple[str, dict]]:
    """Every container of every pod template under ``obj``, with where it was found."""
    found = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                found += [(f"{path}.{key}[{c.get('name')}]", c) for c in value]
            else:
                found += _containers(value, f"{path}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            found += _containers(value, f"{path}[{i}]")
    return found


def _strict(schema):
    """The CRD schema with unknown fields refused, as `kubectl apply --validate=strict` does
    (controller-gen schemas leave additionalProperties open)."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def crd_schemas() -> dict[str, dict]:
    if not CRDS.is_dir():
        pytest.skip(f"KubeRay CRDs not found at {CRDS} (a clone outside the workspace)")
    schemas = {}
    # The CRDs are megabytes of YAML: the C loader reads them in a second, not half a minute.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for name in ("rayservices", "rayjobs", "rayclusters"):
        crd = yaml.load((CRDS / f"ray.io_{name}.yaml").read_text(), Loader=loader)
        for version in crd["spec"]["versions"]:
            if version["name"] == "v1":
                kind = crd["spec"]["names"]["kind"]
                schemas[kind] = _strict(version["schema"]["openAPIV3Schema"])
    return schemas


def test_every_ray_resource_validates_against_the_kuberay_crd(crd_schemas):
    import jsonschema

    docs = _ray_docs()
    assert {d["kind"] for d in docs} == {"RayService", "RayJob"}
    for doc in docs:
        assert doc["apiVersion"] == "ray.io/v1"
        validator = jsonschema.Draft7Validator(crd_schemas[doc["kind"]])
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
        assert not errors, f"{doc['kind']} {doc['metadata']['name']}: {errors}"


def test_the_strict_schema_catches_a_misspelt_field(crd_schemas):
    import jsonschema

    doc = copy.deepcopy(_docs(KUBERAY / "rayservice.yaml")[0])
    doc["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParms"] = {}
    assert list(jsonschema.Draft7Validator(crd_schemas["RayService"]).iter_errors(doc))


def test_serve_config_v2_is_generated_from_serve_config_yaml():
    manifest = _docs(KUBERAY / "rayservice.yaml")[0]
    assert manifest["spec"]["serveConfigV2"] == generate.serve_config_v2(), (
        "kuberay/rayservice.yaml is stale: run `make kuberay`"
    )
    # Rendering again changes nothing: the generator is what wrote the file.
    text = (KUBERAY / "rayservice.yaml").read_text()
    assert generate.render(text, generate.serve_config_v2()) == text


def test_the_sync_check_fails_when_serve_config_changes(tmp_path):
    source = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    source["applications"][0]["deployments"][0]["num_replicas"] = 7
    changed = tmp_path / "serve_config.yaml"
    changed.write_text(yaml.safe_dump(source, sort_keys=False))
    manifest = _docs(KUBERAY / "rayservice.yaml")[0]
    assert manifest["spec"]["serveConfigV2"] != generate.serve_config_v2(changed)


def test_serve_config_v2_is_a_valid_serve_deploy_config_for_the_cluster():
    from ray.serve.schema import ServeDeploySchema

    text = _docs(KUBERAY / "rayservice.yaml")[0]["spec"]["serveConfigV2"]
    config = ServeDeploySchema.model_validate(yaml.safe_load(text))
    assert config.http_options.host == "0.0.0.0"
    local = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    assert config.http_options.port == local["http_options"]["port"]
    (app,) = config.applications
    assert app.import_path == "deployments.app:build_app"
    # The tracking URI must come from the pods' MLFLOW_TRACKING_URI, not from the config.
    assert "tracking_uri" not in app.args
    from deployments.app import AppArgs

    AppArgs.model_validate(app.args)


def test_every_container_has_requests_and_limits():
    containers = []
    for doc in _ray_docs():
        containers += [(doc["metadata"]["name"] + where, c) for where, c in _containers(doc)]
    assert len(containers) >= 5
    for where, container in containers:
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{where}: {kind}"
    service = _docs(KUBERAY / "rayservice.yaml")[0]["spec"]["rayClusterConfig"]
    assert service["enableInTreeAutoscaling"] is True
    sidecar = service["autoscalerOptions"]["resources"]
    assert {"cpu", "memory"} <= set(sidecar["requests"]) and set(sidecar["limits"])


def test_cluster_shape_head_without_cpus_autoscaled_workers_secrets_and_ray_version():
    pin = re.search(r'"ray\[[^\]]*\]==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    for name, cluster in _cluster_specs():
        assert cluster["rayVersion"] == pin.group(1), name
        assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", name
        assert cluster["authOptions"]["mode"] == "token", name
        for group in cluster["workerGroupSpecs"]:
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name
        for _, container in _containers(cluster):
            env = {e["name"]: e for e in container.get("env", [])}
            assert "secretKeyRef" in env["MLFLOW_TRACKING_URI"]["valueFrom"], name
            for secret in ("MLFLOW_TRACKING_URI", "MLOPS_ADMIN_TOKEN", "MLOPS_FEEDBACK_TOKEN"):
                if secret in env:
                    assert "value" not in env[secret], f"{name}: {secret} as a literal value"
            if name == "raymlops":  # the serving cluster runs Serve's fast path, as make run
                assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"]["value"] == "1", name
                assert env["RAY_SERVE_ENABLE_HA_PROXY"]["value"] == "1", name
    service = dict(_cluster_specs())["raymlops"]
    workers = service["workerGroupSpecs"][0]
    assert workers["maxReplicas"] > workers["minReplicas"] >= 1, "the autoscaler needs room"
    for _, container in _containers(service):
        env = {e["name"]: e for e in container["env"]}
        # One Secret per credential: the label source may read the feedback token alone.
        admin = env["MLOPS_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
        feedback = env["MLOPS_FEEDBACK_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert admin == {"name": "raymlops-admin-token", "key": "admin-token"}
        assert feedback == {"name": "raymlops-feedback-token", "key": "feedback-token"}
    # GCS fault tolerance needs Redis: the base must work without it.
    assert "gcsFaultToleranceOptions" not in service


def test_training_rayjob_runs_the_training_module_and_cleans_up():
    (job,) = [d for d in _ray_docs() if d["kind"] == "RayJob"]
    spec = job["spec"]
    assert spec["entrypoint"].startswith("python -m training")
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0


def test_prometheus_monitors_select_kuberay_pods_on_the_metrics_port():
    (pod_monitor,) = _docs(KUBERAY / "podmonitor.yaml")
    (service_monitor,) = _docs(KUBERAY / "servicemonitor.yaml")
    assert pod_monitor["kind"] == "PodMonitor"
    assert pod_monitor["apiVersion"] == service_monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert pod_monitor["spec"]["selector"]["matchLabels"]["ray.io/node-type"] == "worker"
    assert [e["port"] for e in pod_monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    assert service_monitor["kind"] == "ServiceMonitor"
    assert service_monitor["spec"]["selector"]["matchLabels"]["ray.io/node-type"] == "head"
    assert [e["port"] for e in service_monitor["spec"]["endpoints"]] == ["metrics"]
    # The port they name is Ray's metrics port on every Ray container.
    for name, cluster in _cluster_specs():
        assert cluster["headGroupSpec"]["rayStartParams"]["metrics-export-port"] == "8080"
        for _, container in _containers(cluster):
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports["metrics"] == 8080, name


def _kustomize(path: Path) -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed")
    proc = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def test_kustomize_renders_the_base_with_the_built_image():
    docs = _kustomize(KUBERAY)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["NetworkPolicy"] * len(_docs(KUBERAY / "networkpolicy.yaml")) + [
        "PodMonitor",
        "RayJob",
        "RayService",
        "ServiceMonitor",
    ]
    kustomization = yaml.safe_load((KUBERAY / "kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    images = {c["image"] for d in docs for _, c in _containers(d)}
    assert images == {f"{image['newName']}:{image['newTag']}"}
    assert "Secret" not in kinds, "real secrets never go through the kustomization"


def test_gcs_fault_tolerance_component_adds_redis_from_a_secret(tmp_path, crd_schemas):
    import jsonschema

    rel = os.path.relpath(KUBERAY, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [rel],
                "components": [f"{rel}/components/gcs-fault-tolerance"],
            }
        )
    )
    (service,) = [d for d in _kustomize(tmp_path) if d["kind"] == "RayService"]
    ft = service["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert ft["redisAddress"]
    assert ft["redisPassword"]["valueFrom"]["secretKeyRef"]["name"] == "raymlops-redis"
    assert not list(jsonschema.Draft7Validator(crd_schemas["RayService"]).iter_errors(service))
    # The component opens the head's egress to Redis; workers stay closed to it.
    policies = [d for d in _kustomize(tmp_path) if d["kind"] == "NetworkPolicy"]
    pods = _pods()
    redis = _Pod("redis", {"app": "redis"}, namespace="redis")
    assert _connects(policies, pods["serving-head"], redis, 6379)
    assert not _connects(policies, pods["serving-worker"], redis, 6379)
    assert not _connects(_network_policies(), pods["serving-head"], redis, 6379)


# --- Secrets: made by the user, never from a value in the repository --------------------------

SECRETS = KUBERAY / "secrets"
# Values that ship in examples and docs: a cluster must never run with one of them.
PLACEHOLDER = re.compile(
    r"change[-_ ]?me|replace[-_ ]?me|your[-_ ]?(admin[-_ ]|feedback[-_ ])?token", re.I
)


def _secret_refs(obj):
    if isinstance(obj, dict):
        if "secretKeyRef" in obj:
            yield obj["secretKeyRef"]
        for value in obj.values():
            yield from _secret_refs(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _secret_refs(value)


def test_no_manifest_holds_a_secret_value_or_a_placeholder_token():
    files = sorted(KUBERAY.rglob("*.yaml"))
    assert KUBERAY / "rayservice.yaml" in files
    for path in files:
        text = path.read_text()
        assert not PLACEHOLDER.search(text), f"{path.relative_to(ROOT)}: placeholder value"
        for doc in (d for d in yaml.safe_load_all(text) if d):
            if doc.get("kind") == "Secret":
                assert not doc.get("data") and not doc.get("stringData"), (
                    f"{path.relative_to(ROOT)}: a Secret with values in the repository"
                )


def _recipe() -> list[str]:
    """The shell lines of kuberay/secrets/kustomization.yaml's comment that write the .env files."""
    lines = []
    for line in (SECRETS / "kustomization.yaml").read_text().splitlines():
        command = line.removeprefix("#").strip()
        if command.startswith("token()") or re.match(
            r"echo .*> kuberay/secrets/\S+\.env$", command
        ):
            lines.append(command)
    return lines


def test_the_documented_recipe_makes_every_secret_the_manifests_reference(tmp_path):
    """Run the comment's recipe: it writes the git-ignored .env files, kuberay/secrets renders
    them into Secrets holding every name and key the manifests refer to, with fresh tokens."""
    if shutil.which("bash") is None:
        pytest.skip("bash not installed")
    shutil.copy(SECRETS / "kustomization.yaml", tmp_path)
    recipe = "\n".join(_recipe()).replace("kuberay/secrets/", f"{tmp_path}/")
    subprocess.run(["bash", "-euc", recipe], check=True, timeout=60)
    rendered = {d["metadata"]["name"]: d for d in _kustomize(tmp_path)}
    assert {d["kind"] for d in rendered.values()} == {"Secret"}

    def value(name, key):
        return base64.b64decode(rendered[name]["data"][key]).decode()

    refs = {(r["name"], r["key"]) for r in _secret_refs(_manifests())}
    assert refs >= {
        ("raymlops-secrets", "MLFLOW_TRACKING_URI"),
        ("raymlops-admin-token", "admin-token"),
        ("raymlops-feedback-token", "feedback-token"),
    }
    refs |= {(c["authOptions"]["secretName"], "auth_token") for _, c in _cluster_specs()}
    for name, key in refs:
        assert value(name, key), (name, key)
    assert value("raymlops-secrets", "MLFLOW_TRACKING_URI").startswith("http")
    tokens = [value(n, k) for n, k in refs if k != "MLFLOW_TRACKING_URI"]
    # Long enough for the app (it refuses fewer than 24 characters), one per credential.
    assert len(tokens) == 3 and len(set(tokens)) == 3
    assert all(len(t) >= 32 and not PLACEHOLDER.search(t) for t in tokens)
    # The kubectl alternative in the same comment creates the same Secrets and keys.
    text = (SECRETS / "kustomization.yaml").read_text()
    created = set(
        re.findall(r"create secret generic (\S+).*?--from-literal=([-\w.]+)=", text, re.S)
    )
    assert created == refs


def test_secrets_cannot_be_applied_before_the_user_writes_them():
    # Without the user's .env files there is nothing to apply (no default, no placeholder) ...
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed")
    present = [p for p in SECRETS.glob("*.env")]
    if present:
        pytest.skip(f"this checkout has its own secrets files: {present}")
    proc = subprocess.run(
        ["kubectl", "kustomize", str(SECRETS)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0 and ".env" in proc.stderr
    # ... and once written, git never sees them.
    if shutil.which("git") and (ROOT / ".git").exists():
        for name in ("admin-token.env", "feedback-token.env", "ray-auth.env", "mlflow.env"):
            check = subprocess.run(
                ["git", "check-ignore", "-q", str(SECRETS / name)], cwd=ROOT, timeout=30
            )
            assert check.returncode == 0, f"kuberay/secrets/{name} is not git-ignored"


# --- Pod hardening ---------------------------------------------------------------------------


def _image_user() -> tuple[int, int]:
    match = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert match, "the Dockerfile runs as a numeric USER uid:gid"
    return int(match.group(1)), int(match.group(2))


def _pod_specs(obj, path=""):
    """Every pod spec (a dict with `containers`) under ``obj``, with where it was found."""
    if isinstance(obj, dict):
        if isinstance(obj.get("containers"), list):
            yield path, obj
        for key, value in obj.items():
            yield from _pod_specs(value, f"{path}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _pod_specs(value, f"{path}[{i}]")


CONTAINER_HARDENING = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
}


def _check_hardened(where: str, pod: dict, container: dict) -> None:
    uid, gid = _image_user()
    pod_ctx = pod.get("securityContext", {})
    ctx = container.get("securityContext", {})
    effective = {**pod_ctx, **ctx}  # the container's fields win, as in Kubernetes
    for field, wanted in CONTAINER_HARDENING.items():
        assert ctx.get(field) is wanted, f"{where}: securityContext.{field} must be {wanted}"
    assert ctx.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: drop ALL capabilities"
    assert not ctx.get("capabilities", {}).get("add"), f"{where}: adds capabilities"
    assert effective.get("seccompProfile") == {"type": "RuntimeDefault"}, where
    assert effective.get("runAsUser") == uid, f"{where}: runs as the image's user {uid}"
    assert effective.get("runAsGroup", gid) == gid, where
    assert not effective.get("privileged"), where
    # Read-only root: Ray, Python's tempfile and MLflow write to /tmp, which must be an emptyDir.
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    assert "/tmp" in mounts, f"{where}: /tmp is not mounted under a read-only root"
    assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp must be an emptyDir"


def test_every_container_runs_hardened():
    docs = [d for d in _kustomize(KUBERAY) if d["kind"] in RAY_KINDS]
    checked = 0
    for doc in docs:
        for where, pod in _pod_specs(doc["spec"]):
            for key in ("containers", "initContainers"):
                for container in pod.get(key, []):
                    name = f"{doc['metadata']['name']}{where}.{container['name']}"
                    _check_hardened(name, pod, container)
                    checked += 1
    # Serving head and workers, the RayJob's submitter, head and workers.
    assert checked >= 5
    # KubeRay adds the autoscaler sidecar to the serving head pod: hardened through
    # autoscalerOptions, with the head pod's /tmp emptyDir mounted.
    for doc in docs:
        cluster = doc["spec"].get("rayClusterConfig") or doc["spec"]["rayClusterSpec"]
        if cluster.get("enableInTreeAutoscaling"):
            options = cluster["autoscalerOptions"]
            sidecar = {
                "name": "autoscaler",
                "securityContext": options.get("securityContext", {}),
                "volumeMounts": options.get("volumeMounts", []),
            }
            head = cluster["headGroupSpec"]["template"]["spec"]
            _check_hardened(f"{doc['metadata']['name']} autoscaler", head, sidecar)
            checked += 1
    assert checked >= 6


def test_tune_storage_is_writable_under_the_read_only_root():
    """Ray Tune writes to <PROJECT_ROOT>/.mlops/ray_results: PROJECT_ROOT is the WORKDIR for the
    RayJob's driver and site-packages for a Ray worker importing the installed `configs`."""
    from configs import PROJECT_ROOT
    from training.train import cfg_storage_path

    state_dir = Path(cfg_storage_path()).relative_to(PROJECT_ROOT).parts[0]
    dockerfile = (ROOT / "Dockerfile").read_text()
    workdir = re.search(r"^WORKDIR (\S+)$", dockerfile, re.M).group(1)
    py = re.search(r"^FROM rayproject/ray:\S+-py3(\d+)", dockerfile, re.M).group(1)
    wanted = {
        f"{workdir}/{state_dir}",
        f"/home/ray/anaconda3/lib/python3.{py}/site-packages/{state_dir}",
    }
    for name, cluster in _cluster_specs():
        for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
            pod = group["template"]["spec"]
            volumes = {v["name"]: v for v in pod["volumes"]}
            for container in pod["containers"]:
                mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
                assert wanted <= set(mounts), f"{name}: Tune storage not writable: {wanted}"
                for path in wanted:
                    assert "emptyDir" in volumes[mounts[path]], (name, path)


# --- Serving: two routers, timeouts -----------------------------------------------------------


def _serve_config_v2() -> dict:
    return yaml.safe_load(_docs(KUBERAY / "rayservice.yaml")[0]["spec"]["serveConfigV2"])


def _serving_env() -> dict[str, dict]:
    service = dict(_cluster_specs())["raymlops"]
    envs = [{e["name"]: e for e in c.get("env", [])} for _, c in _containers(service)]
    assert envs and all(env == envs[0] for env in envs), "head and workers share one env"
    return envs[0]


def test_serving_cluster_holds_two_routers_on_separate_worker_pods():
    (app,) = _serve_config_v2()["applications"]
    deployments = {d["name"]: d for d in app["deployments"]}
    routers = deployments["Router"]["num_replicas"]
    assert routers >= 2, "one Router replica is a single point of failure"
    (workers,) = dict(_cluster_specs())["raymlops"]["workerGroupSpecs"]
    # The head has num-cpus 0: replicas run on workers. Serve spreads a deployment's replicas
    # over nodes, so with a pod per Router one worker's loss leaves a Router answering.
    assert workers["minReplicas"] >= routers
    cpus = float(workers["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
    needed = 0.0
    for deployment in deployments.values():
        replicas = deployment.get("num_replicas")
        if replicas is None:
            replicas = deployment.get("autoscaling_config", {}).get("min_replicas", 1)
        needed += replicas * deployment.get("ray_actor_options", {}).get("num_cpus", 1)
    assert needed <= workers["minReplicas"] * cpus, (needed, workers["minReplicas"], cpus)
    affinity = workers["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


def test_haproxy_timeouts_bound_slow_clients_and_leave_serve_the_request_timeout():
    import ray.serve._private.constants as serve_constants

    env = _serving_env()
    names = ("RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S", "RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S")
    for name in names:
        # A renamed variable in a new Ray would silently fall back to the default.
        assert hasattr(serve_constants, name), f"Ray no longer reads {name}"
        assert name in env, f"{name} unset: HAProxy keeps Ray's default"
    client = int(env["RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S"]["value"])
    server = int(env["RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S"]["value"])
    # Ray's default client timeout is an hour: a slow body would hold a connection that long.
    assert 0 < client <= 60
    request_timeout = _serve_config_v2()["http_options"].get("request_timeout_s")
    assert request_timeout, "serveConfigV2 sets no http_options.request_timeout_s"
    # Serve's own timeout must answer before HAProxy gives up on a replica (a bare error).
    assert server > request_timeout


HAPROXY_RENDER = """
import sys
from ray.serve._private.haproxy import HAProxyApi, HAProxyConfig
from ray.serve.config import HTTPOptions

d = sys.argv[1]
cfg = HAProxyConfig(
    http_options=HTTPOptions(host="0.0.0.0", port=8000, request_timeout_s=float(sys.argv[2])),
    socket_path=f"{d}/admin.sock",
    server_state_base=d,
    server_state_file=f"{d}/state",
    metrics_socket_path=f"{d}/metrics.sock",
)
HAProxyApi(cfg=cfg, config_file_path=f"{d}/haproxy.cfg")._generate_config_file_internal()
"""


def test_haproxy_config_rendered_from_the_pods_env_has_the_timeouts(tmp_path):
    """Ray reads the HAProxy variables at import: render Ray's own HAProxy config with the
    serving pods' env and read the `defaults` section HAProxy would run with."""
    env = {k: v["value"] for k, v in _serving_env().items() if "value" in v}
    for name in ("RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S", "RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S"):
        assert name in env, f"{name} unset: HAProxy keeps Ray's default"
    request_timeout = _serve_config_v2()["http_options"].get("request_timeout_s", 30)
    proc = subprocess.run(
        [sys.executable, "-c", HAPROXY_RENDER, str(tmp_path), str(request_timeout)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    config = (tmp_path / "haproxy.cfg").read_text()
    defaults = config.split("\ndefaults\n", 1)[1].split("\nfrontend ", 1)[0]
    lines = {line.strip() for line in defaults.splitlines()}
    assert f"timeout client {env['RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S']}s" in lines
    assert f"timeout server {env['RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S']}s" in lines
    # A request whose Router replica died (refused, or reset with nothing answered) is replayed
    # on another one (item 0), and a whole 1,024-row request fits the buffer replays need.
    assert {"retry-on conn-failure empty-response", "option redispatch 1"} <= lines
    assert "tune.bufsize 1048576" in {line.strip() for line in config.splitlines()}
    # Ray 2.60 renders no `timeout http-request` from anything a deployment can set, not
    # even request_timeout_s: the client timeout above is the slow-client bound. If a newer
    # Ray renders one, revisit RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S.
    assert not any(line.startswith("timeout http-request") for line in lines)


# --- NetworkPolicy ---------------------------------------------------------------------------

APP_NAMESPACE = "app"


class _Pod:
    """A pod as NetworkPolicy sees it: its labels and its namespace's labels; None = outside."""

    def __init__(self, name, labels, namespace=APP_NAMESPACE, namespace_labels=None):
        self.name = name
        self.labels = labels
        self.namespace = namespace
        self.namespace_labels = {
            "kubernetes.io/metadata.name": namespace,
            **(namespace_labels or {}),
        }

    def __repr__(self):
        return f"{self.namespace}/{self.name}"


def _network_policies() -> list[dict]:
    return _docs(KUBERAY / "networkpolicy.yaml")


def _kuberay_pod_labels(template_labels, cluster, node_type, group) -> dict:
    """The labels KubeRay v1.7 puts on a Ray pod (common/pod.go labelPod): its own, then the
    template's, except node-type, group and cluster, which it never lets a template change."""
    labels = {
        "ray.io/is-ray-node": "yes",
        "app.kubernetes.io/name": "kuberay",
        "app.kubernetes.io/created-by": "kuberay-operator",
    }
    labels |= template_labels
    labels |= {"ray.io/cluster": cluster, "ray.io/node-type": node_type, "ray.io/group": group}
    return labels


def _pods() -> dict[str, _Pod]:
    """The app's pods from the rendered manifests, and the pods around them."""
    pods = {}
    for doc in _ray_docs():
        spec = doc["spec"]
        cluster = spec.get("rayClusterConfig") or spec["rayClusterSpec"]
        kind = "serving" if doc["kind"] == "RayService" else "training"
        name = f"{doc['metadata']['name']}-x7k2p"  # KubeRay generates the RayCluster's name
        head = cluster["headGroupSpec"]["template"]["metadata"].get("labels", {})
        pods[f"{kind}-head"] = _Pod(
            f"{kind}-head", _kuberay_pod_labels(head, name, "head", "headgroup")
        )
        group = cluster["workerGroupSpecs"][0]
        worker = group["template"]["metadata"].get("labels", {})
        pods[f"{kind}-worker"] = _Pod(
            f"{kind}-worker", _kuberay_pod_labels(worker, name, "worker", group["groupName"])
        )
        if doc["kind"] == "RayJob":
            submitter = spec["submitterPodTemplate"].get("metadata", {}).get("labels", {})
            pods["submitter"] = _Pod(
                "submitter",
                submitter
                | {
                    "ray.io/originated-from-cr-name": doc["metadata"]["name"],
                    "ray.io/originated-from-crd": "RayJob",
                },
            )
    pods["client"] = _Pod("client", {"app": "shop"})
    pods["ingress"] = _Pod(
        "ingress",
        {"app.kubernetes.io/name": "ingress-nginx"},
        namespace="ingress-nginx",
        namespace_labels={"raymlops.io/serve-clients": "true"},
    )
    pods["stranger"] = _Pod("stranger", {"app": "other"}, namespace="other")
    pods["operator"] = _Pod(
        "operator",
        {"app.kubernetes.io/component": "kuberay-operator", "app.kubernetes.io/name": "kuberay"},
        namespace="kuberay-system",
    )
    # Labelled like the operator, but in another namespace: must get nothing more.
    pods["fake-operator"] = _Pod("fake-operator", pods["operator"].labels, namespace="other")
    pods["prometheus"] = _Pod(
        "prometheus", {"app.kubernetes.io/name": "prometheus"}, namespace="monitoring"
    )
    pods["mlflow"] = _Pod("mlflow", {"app": "mlflow"}, namespace="mlflow")
    pods["dns"] = _Pod("dns", {"k8s-app": "kube-dns"}, namespace="kube-system")
    return pods


def _selects(selector: dict, labels: dict) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _peer_matches(peer: dict, other: _Pod | None, policy_namespace: str) -> bool:
    if other is None:  # an address outside the cluster: only ipBlock peers could match
        return "ipBlock" in peer and peer["ipBlock"]["cidr"] in ("0.0.0.0/0", "::/0")
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], other.namespace_labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return _selects(peer.get("podSelector", {}), other.labels)


def _port_matches(rule: dict, port: int, protocol: str) -> bool:
    if not rule.get("ports"):
        return True
    for entry in rule["ports"]:
        if entry.get("protocol", "TCP") != protocol:
            continue
        if "port" not in entry:
            return True
        if entry["port"] <= port <= entry.get("endPort", entry["port"]):
            return True
    return False


def _allowed(policies, pod: _Pod, direction: str, other: _Pod | None, port, protocol) -> bool:
    """Kubernetes NetworkPolicy semantics for one direction of one connection: a pod no policy
    of that type selects is open; otherwise some rule of some selecting policy must allow it."""
    if pod is None:
        return True  # outside the cluster: no policy applies
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [
        p
        for p in policies
        if pod.namespace == APP_NAMESPACE
        and _selects(p["spec"]["podSelector"], pod.labels)
        and direction in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(key, []):
            peers = rule.get(peers_key)
            if (not peers or any(_peer_matches(p, other, APP_NAMESPACE) for p in peers)) and (
                _port_matches(rule, port, protocol)
            ):
                return True
    return False


def _connects(policies, source, target, port, protocol="TCP") -> bool:
    return _allowed(policies, source, "Egress", target, port, protocol) and _allowed(
        policies, target, "Ingress", source, port, protocol
    )


def _network_policy_schema(crd_schemas) -> dict:
    """networking.k8s.io/v1 NetworkPolicy, strict, from the upstream types KubeRay's RayCluster
    CRD embeds (its networkPolicy rules are NetworkPolicyIngressRule / EgressRule)."""
    rules = crd_schemas["RayCluster"]["properties"]["spec"]["properties"]["networkPolicy"]
    rules = rules["properties"]["head"]["properties"]
    ingress, egress = rules["ingressRules"]["items"], rules["egressRules"]["items"]
    selector = ingress["properties"]["from"]["items"]["properties"]["podSelector"]
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "networking.k8s.io/v1"},
            "kind": {"const": "NetworkPolicy"},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
            "spec": {
                "type": "object",
                "required": ["podSelector"],
                "additionalProperties": False,
                "properties": {
                    "podSelector": selector,
                    "policyTypes": {
                        "type": "array",
                        "items": {"enum": ["Ingress", "Egress"]},
                        "uniqueItems": True,
                    },
                    "ingress": {"type": "array", "items": ingress},
                    "egress": {"type": "array", "items": egress},
                },
            },
        },
    }


@pytest.fixture(scope="module")
def cluster_crd_schema(crd_schemas) -> dict:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load((CRDS / "ray.io_rayclusters.yaml").read_text(), Loader=loader)
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return {"RayCluster": _strict(v1["schema"]["openAPIV3Schema"])}


def test_network_policies_validate_against_the_kubernetes_types(cluster_crd_schema):
    import jsonschema

    schema = _network_policy_schema(cluster_crd_schema)
    validator = jsonschema.Draft7Validator(schema)
    policies = _network_policies()
    assert policies
    component = KUBERAY / "components" / "gcs-fault-tolerance" / "networkpolicy.yaml"
    for policy in policies + _docs(component):
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(policy)]
        assert not errors, f"{policy['metadata']['name']}: {errors}"
    # The strict schema does refuse a misspelt field.
    broken = copy.deepcopy(policies[0])
    broken["spec"]["podSelectr"] = {}
    assert list(validator.iter_errors(broken))


def test_network_policies_isolate_every_app_pod():
    policies = _network_policies()
    pods = _pods()
    app_pods = [pods[k] for k in pods if k.startswith(("serving", "training", "submitter"))]
    assert len(app_pods) == 5
    for pod in app_pods:
        for direction in ("Ingress", "Egress"):
            assert any(
                _selects(p["spec"]["podSelector"], pod.labels)
                and direction in p["spec"]["policyTypes"]
                and not p["spec"].get(direction.lower())
                for p in policies
            ), f"no default deny of {direction} selects {pod}"


def test_network_policies_allow_what_serving_and_training_need_and_nothing_else():
    policies = _network_policies()
    pods = _pods()

    def ok(source, target, port, protocol="TCP"):
        a = pods[source] if source else None
        b = pods[target] if target else None
        return _connects(policies, a, b, port, protocol)

    ray_ports = [6379, 8265, 10001, 52365, 8080, 8000, 12345, 20001]
    # Inside each cluster every Ray port, both ways; nothing across clusters.
    for kind in ("serving", "training"):
        for port in ray_ports:
            assert ok(f"{kind}-worker", f"{kind}-head", port)
            assert ok(f"{kind}-head", f"{kind}-worker", port)
    for port in ray_ports:
        assert not ok("training-worker", "serving-head", port)
        assert not ok("serving-worker", "training-head", port)
    assert ok("submitter", "training-head", 8265)
    assert not ok("submitter", "serving-head", 8265)
    # Clients reach Serve's HTTP port on every serving pod, and nothing else.
    for source in ("client", "ingress"):
        for target in ("serving-head", "serving-worker"):
            assert ok(source, target, 8000), (source, target)
            for port in (6379, 8265, 10001, 52365, 8080):
                assert not ok(source, target, port), (source, target, port)
        assert not ok(source, "training-head", 8265)
    assert not ok("stranger", "serving-head", 8000)
    # Addresses outside the cluster come in through an ingress controller (labelled namespace).
    assert not ok(None, "serving-worker", 8000)
    # The KubeRay operator: dashboard and the head's Serve health check, heads only.
    for target, port in (("serving-head", 8265), ("serving-head", 8000), ("training-head", 8265)):
        assert ok("operator", target, port)
        assert not ok("fake-operator", target, port), "operator labels outside its namespace"
    assert not ok("operator", "serving-head", 6379)
    assert not ok("operator", "serving-worker", 8265)
    # Prometheus scrapes the metrics port of every Ray pod, nothing else.
    for target in ("serving-head", "serving-worker", "training-head", "training-worker"):
        assert ok("prometheus", target, 8080)
        assert not ok("prometheus", target, 8265)
    # Out: DNS, MLflow on 5000, the API server for the serving head's autoscaler.
    for source in ("serving-head", "serving-worker", "training-head", "training-worker"):
        assert ok(source, "dns", 53, "UDP") and ok(source, "dns", 53)
        assert ok(source, "mlflow", 5000)
        assert not ok(source, "mlflow", 22)
        assert not ok(source, "client", 8000)
        assert not ok(source, "stranger", 5432)
        assert not ok(source, None, 80)
    # Only the serving head may open HTTPS (its autoscaler sidecar calls the API server).
    assert ok("serving-head", None, 443) and ok("serving-head", None, 6443)
    assert not ok("serving-worker", None, 443)
    assert not ok("training-head", None, 443)
