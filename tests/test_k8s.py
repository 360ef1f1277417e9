"""deploy/k8s/, the Kubernetes base: valid offline, and true to the image and the code.

The core kinds validate against the Kubernetes schemas that `kubernetes-validate` ships
(strict: an unknown or misspelt field fails) for KUBERNETES. ServiceMonitor and
PrometheusRule are prometheus-operator CRDs, not in those schemas: they are checked here
against a minimal schema of the fields we use. Then what the manifests say is compared
with what the Dockerfile, the bentofile and the code do: image, port, user, data volume,
probe paths (service/routes.py), commands, every LIVETUNE_* variable, the alert rules.
No cluster and no network.
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from service.metrics import METRICS_PATH
from service.routes import OPEN, ROUTES
from service.settings import ServiceSettings
from training.__main__ import parser as training_cli
from training.job_settings import JobSettings
from training.labels import load_labels
from training.settings import ENV_PREFIX, SettingsError, load_settings
from training.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES = "1.28.0"  # the oldest kubernetes-validate>=1.28 (pyproject) is sure to ship
DOCKERFILE = (ROOT / "Dockerfile").read_text()
BENTOFILE = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
RESOURCES = [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]
OPEN_PATHS = {route.path for route in ROUTES if route.scope == OPEN}
REAL_TOKEN_HASH = "sha256:" + "ab" * 32  # what an operator puts in place of a placeholder

DURATION = {"type": "string", "pattern": r"^(0|([0-9]+(ms|s|m|h|d|w|y))+)$"}
STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}},
}


def crd(api_version: str, kind: str, spec: dict) -> dict:
    """A minimal schema of a custom resource: its type, a name, and `spec`."""
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
        },
    }


SERVICE_MONITOR = crd("monitoring.coreos.com/v1", "ServiceMonitor", {
    "type": "object",
    "required": ["selector", "endpoints"],
    "additionalProperties": False,
    "properties": {
        "selector": {"type": "object", "required": ["matchLabels"],
                     "properties": {"matchLabels": STRINGS}},
        "endpoints": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["port", "path"],
            "additionalProperties": False,
            "properties": {
                "port": {"type": "string"},
                "path": {"type": "string", "pattern": "^/"},
                "interval": DURATION,
                "scrapeTimeout": DURATION,
                "scheme": {"enum": ["http", "https"]},
                "authorization": {"type": "object"},  # with LIVETUNE_METRICS_AUTH=true
            },
        }},
    },
})  # fmt: skip
RULE = {
    "type": "object",
    "required": ["expr"],
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
    "additionalProperties": False,
    "properties": {
        "alert": {"type": "string"},
        "record": {"type": "string"},
        "expr": {"type": "string", "minLength": 1},
        "for": DURATION,
        "keep_firing_for": DURATION,
        "labels": STRINGS,
        "annotations": STRINGS,
    },
}
PROMETHEUS_RULE = crd("monitoring.coreos.com/v1", "PrometheusRule", {
    "type": "object",
    "required": ["groups"],
    "additionalProperties": False,
    "properties": {"groups": {"type": "array", "minItems": 1, "items": {
        "type": "object",
        "required": ["name", "rules"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string"},
            "interval": DURATION,
            "rules": {"type": "array", "minItems": 1, "items": RULE},
        },
    }}},
})  # fmt: skip
CUSTOM_SCHEMAS = {"ServiceMonitor": SERVICE_MONITOR, "PrometheusRule": PROMETHEUS_RULE}


def resource(kind: str, name: str) -> dict:
    matches = [r for r in RESOURCES if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(matches) == 1, f"want one {kind} {name} in deploy/k8s, found {len(matches)}"
    return matches[0]


def container(deployment: str) -> dict:
    (only,) = resource("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return only


def dockerfile(pattern: str) -> str:
    match = re.search(pattern, DOCKERFILE, flags=re.M)
    assert match, f"the Dockerfile has no line matching {pattern!r}"
    return match.group(1)


def image_cmd() -> list[str]:
    return json.loads(dockerfile(r"^CMD (\[.*\])$"))


def pod_environment(deployment: str) -> dict[str, str]:
    """The variables the container starts with: its env, then its ConfigMaps and Secrets."""
    spec = container(deployment)
    env = {item["name"]: item["value"] for item in spec.get("env", [])}
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            env.update(resource("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            secret = resource("Secret", source["secretRef"]["name"])
            decoded = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
            env.update(decoded | secret.get("stringData", {}))
    return env


def setting_variables(cls) -> set[str]:
    """Every variable `cls` reads, hyper-parameters as LIVETUNE_TRAIN__<FIELD>."""
    names = {f"{ENV_PREFIX}{field.upper()}" for field in cls.model_fields}
    if "train" in cls.model_fields:
        names |= {f"{ENV_PREFIX}TRAIN__{field.upper()}" for field in TrainConfig.model_fields}
    return names


def use_environment(monkeypatch, env: dict[str, str]) -> None:
    for name in [n for n in os.environ if n.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(
    "doc",
    [r for r in RESOURCES if r["kind"] not in CUSTOM_SCHEMAS],
    ids=lambda r: f"{r['kind']}/{r['metadata']['name']}",
)
def test_core_resources_validate_against_the_kubernetes_schemas(doc):
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_a_misspelt_field_fails_either_check():
    deployment = json.loads(json.dumps(resource("Deployment", "livetune-api")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)
    monitor = json.loads(json.dumps(resource("ServiceMonitor", "livetune")))
    monitor["spec"]["endpoints"][0]["paht"] = "/metrics"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SERVICE_MONITOR).validate(monitor)


@pytest.mark.parametrize("kind", CUSTOM_SCHEMAS)
def test_prometheus_operator_resources_have_the_expected_shape(kind):
    docs = [r for r in RESOURCES if r["kind"] == kind]
    assert docs, f"no {kind} in deploy/k8s"
    for doc in docs:
        jsonschema.Draft202012Validator(CUSTOM_SCHEMAS[kind]).validate(doc)


def test_the_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == [path.name for path in MANIFESTS]


def test_both_deployments_run_the_image_the_project_builds():
    for deployment in ("livetune-api", "livetune-trainer"):
        assert container(deployment)["image"].partition(":")[0] == BENTOFILE["name"]
    assert f"docker build -t {BENTOFILE['name']} ." in DOCKERFILE


def test_the_api_runs_the_image_cmd_on_its_port_behind_the_service():
    api = container("livetune-api")
    assert "command" not in api and "args" not in api  # so the image's bentoml serve runs
    cmd = image_cmd()
    assert cmd[:3] == ["bentoml", "serve", BENTOFILE["service"]]
    port = int(dockerfile(r"^EXPOSE (\d+)$"))
    assert int(cmd[cmd.index("--port") + 1]) == port
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    (service_port,) = resource("Service", "livetune")["spec"]["ports"]
    assert ports[service_port["targetPort"]] == port
    assert service_port["port"] == port


def test_the_probes_call_the_services_open_routes():
    api = container("livetune-api")
    assert {"/livez", "/readyz"} <= OPEN_PATHS
    assert api["startupProbe"]["httpGet"]["path"] == "/livez"
    assert api["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    names = {p["name"] for p in api["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert api[probe]["httpGet"]["port"] in names


def test_the_service_and_the_monitor_select_the_api_pods():
    pods = resource("Deployment", "livetune-api")["spec"]["template"]["metadata"]["labels"]
    trainer = resource("Deployment", "livetune-trainer")["spec"]["template"]["metadata"]
    service = resource("Service", "livetune")
    monitor = resource("ServiceMonitor", "livetune")["spec"]
    assert service["spec"]["selector"].items() <= pods.items()
    assert not service["spec"]["selector"].items() <= trainer["labels"].items()
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == METRICS_PATH and any(r.path == METRICS_PATH for r in ROUTES)


def test_the_trainer_pods_run_metrics_are_scraped_through_a_service_of_their_own():
    trainer = resource("Deployment", "livetune-trainer")["spec"]["template"]["metadata"]
    service = resource("Service", "livetune-trainer")
    monitor = resource("ServiceMonitor", "livetune-trainer")["spec"]
    assert service["spec"]["selector"].items() <= trainer["labels"].items()
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["endpoints"]
    (port,) = container("livetune-trainer")["ports"]
    assert endpoint["port"] == port["name"] == service["spec"]["ports"][0]["targetPort"]
    assert pod_environment("livetune-trainer")["LIVETUNE_TRAINER_METRICS_PORT"] == str(
        port["containerPort"]
    )


def test_the_api_rollout_never_drops_below_its_ready_replicas():
    spec = resource("Deployment", "livetune-api")["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    budget = resource("PodDisruptionBudget", "livetune-api")["spec"]
    assert budget["minAvailable"] == 1
    pods = spec["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= pods.items()


def test_the_trainer_is_one_gpu_pod_running_the_training_loop():
    spec = resource("Deployment", "livetune-trainer")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}  # two trainers never overlap
    trainer = container("livetune-trainer")
    command = trainer["command"]
    assert command[:3] == ["python", "-m", "training"]
    assert training_cli().parse_args(command[3:]).command == "run"
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod_environment("livetune-trainer")["LIVETUNE_TRAIN_DEVICE"] == "cuda"


@pytest.mark.parametrize("deployment", ["livetune-api", "livetune-trainer"])
def test_pods_run_as_the_image_user_with_the_data_dir_mounted(deployment):
    pod = resource("Deployment", deployment)["spec"]["template"]["spec"]
    uid = int(dockerfile(r"useradd .*--uid (\d+) \w+"))
    assert dockerfile(r"^USER (\S+)$") == dockerfile(r"useradd .*--uid \d+ (\w+)")
    assert pod["securityContext"]["runAsUser"] == uid
    assert pod["securityContext"]["runAsNonRoot"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container(deployment)["volumeMounts"]}
    assert set(mounts.values()) <= set(volumes)
    data_dir = pod_environment(deployment)["LIVETUNE_DATA_DIR"]
    assert data_dir == dockerfile(r"LIVETUNE_DATA_DIR=(\S+)")
    assert "emptyDir" in volumes[mounts[data_dir]]  # only a local cache
    labels_file = Path(pod_environment(deployment)["LIVETUNE_LABELS_FILE"])
    assert volumes[mounts[str(labels_file.parent)]]["configMap"]["name"] == "livetune-labels"


@pytest.mark.parametrize(
    ("deployment", "settings"),
    [("livetune-api", ServiceSettings), ("livetune-trainer", JobSettings)],
)
def test_every_livetune_variable_is_a_real_setting(deployment, settings):
    variables = {name for name in pod_environment(deployment) if name.startswith(ENV_PREFIX)}
    assert variables - setting_variables(settings) == set()


def test_the_api_and_the_trainer_start_with_the_manifests_settings(monkeypatch, tmp_path):
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text(resource("ConfigMap", "livetune-labels")["data"]["labels.txt"])
    assert load_labels(labels_file)
    filled = {"LIVETUNE_LABELS_FILE": str(labels_file)}
    api_env = pod_environment("livetune-api") | filled
    use_environment(monkeypatch, api_env | {n: REAL_TOKEN_HASH for n in api_env if "TOKENS" in n})
    api = load_settings(ServiceSettings)
    assert api.trainer is False
    assert api.store_url.get_secret_value().startswith("postgresql://")
    assert api.adapters_url.startswith("s3://")
    use_environment(monkeypatch, pod_environment("livetune-trainer") | filled)
    assert load_settings(JobSettings).train_device == "cuda"


def test_the_secret_templates_are_refused_until_filled_in(monkeypatch):
    use_environment(monkeypatch, pod_environment("livetune-api"))
    with pytest.raises(SettingsError, match="LIVETUNE_TOKENS_PREDICT"):
        load_settings(ServiceSettings, require_labels=False)


def test_the_prometheus_rule_holds_the_alert_rules_file():
    alerts = yaml.safe_load((ROOT / "deploy" / "alerts.yml").read_text())
    rule = resource("PrometheusRule", "livetune")
    assert rule["spec"]["groups"] == alerts["groups"], (
        "deploy/k8s/prometheusrule.yaml differs from deploy/alerts.yml: copy its groups under spec:"
    )
    jobs = set(re.findall(r'job="([^"]+)"', (ROOT / "deploy" / "alerts.yml").read_text()))
    assert jobs == {resource("Service", "livetune")["metadata"]["name"]}  # the monitor's job
