"""KubeRay manifests: valid against the KubeRay v1.7.0 CRDs, renderable by kustomize, and with a
serveConfigV2 that is exactly what kuberay/generate.py makes of serve_config.yaml."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
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
    for name in ("rayservice.yaml", "rayjob-train.yaml", "podmonitor.yaml", "servicemonitor.yaml"):
        docs += _docs(KUBERAY / name)
    return docs


def _ray_docs() -> list[dict]:
    return [d for d in _manifests() if d["kind"] in RAY_KINDS]


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
            for secret in ("MLFLOW_TRACKING_URI", "MLOPS_ADMIN_TOKEN"):
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
        assert env["MLOPS_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "raymlops-secrets"
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
    assert kinds == ["PodMonitor", "RayJob", "RayService", "ServiceMonitor"]
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


def test_secret_example_holds_every_secret_the_manifests_reference():
    secrets = {d["metadata"]["name"]: d for d in _docs(KUBERAY / "secret.example.yaml")}

    def refs(obj):
        if isinstance(obj, dict):
            if "secretKeyRef" in obj:
                yield obj["secretKeyRef"]
            for value in obj.values():
                yield from refs(value)
        elif isinstance(obj, list):
            for value in obj:
                yield from refs(value)

    found = list(refs(_manifests()))
    assert found
    for ref in found:
        assert ref["key"] in secrets[ref["name"]]["stringData"], ref
    for _, cluster in _cluster_specs():
        assert "auth_token" in secrets[cluster["authOptions"]["secretName"]]["stringData"]
