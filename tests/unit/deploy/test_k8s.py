"""The Kubernetes example (deploy/k8s) cannot run here: it is read, and checked against
docker-compose.yml (the commands and variables it deploys) and the API (the paths its
probes and its KEDA trigger ask for)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy.engine import make_url

from api.main import create_app
from api.observability.scaling import Signals
from shared.config import Config
from shared.control.database import shown
from testing.processes import ROOT
from tests.unit.deploy.test_compose import DEPLOYMENT_VARIABLES

pytestmark = pytest.mark.unit

K8S = ROOT / "deploy" / "k8s"


CONTAINERS = {"llm-api": "api", "llm-worker-default": "worker", "llm-flower": "flower"}  # Deployment: compose service


def manifests() -> list[dict[str, Any]]:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    return [doc for name in listed for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def kind(kind_name: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in manifests() if doc["kind"] == kind_name}


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def variables(deployment: dict[str, Any]) -> set[str]:
    """The variables a Deployment's container is given: its ConfigMap's and its own."""
    configs = kind("ConfigMap")
    found = {entry["name"] for entry in container(deployment).get("env", [])}
    for source in container(deployment).get("envFrom", []):
        found |= set(configs[source["configMapRef"]["name"]]["data"])
    return found


def test_every_file_is_listed_and_every_part_deployed() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kind("Deployment")) == set(CONTAINERS)
    assert set(kind("Service")) == {"llm-api", "llm-flower", "llm-postgres"}
    assert set(kind("StatefulSet")) == {"llm-postgres"}
    for deployment in [*kind("Deployment").values(), *kind("StatefulSet").values()]:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_each_deployment_runs_what_compose_runs_from_the_same_image() -> None:
    services = compose()["services"]
    for name, service in CONTAINERS.items():
        deployed = container(kind("Deployment")[name])
        assert deployed["command"] == services[service]["command"], name
        assert deployed["image"] == services[service]["image"]
    # The grace periods: longer than uvicorn's and the workers' own (compose's stop_grace_period).
    grace = {name: kind("Deployment")[name]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
             for name in ("llm-api", "llm-worker-default")}  # fmt: skip
    assert grace == {"llm-api": 40, "llm-worker-default": 90}
    assert services["api"]["stop_grace_period"] == "40s" and services["worker"]["stop_grace_period"] == "90s"


def test_the_variables_are_the_gateways_and_the_secrets_are_not_in_the_config_map() -> None:
    (config,) = kind("ConfigMap").values()
    assert set(config["data"]) <= DEPLOYMENT_VARIABLES, set(config["data"]) - DEPLOYMENT_VARIABLES
    secrets = {"RABBIT_MQ_PASSWORD", "API_KEYS", "FILE_STORE_S3_SECRET", "REDIS_PASSWORD", "ADMIN_API_KEYS"}
    assert not (secrets | {"CONTROL_DATABASE_URL", "POSTGRES_PASSWORD"}) & set(config["data"])
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", (ROOT / "docker-compose.yml").read_text()))
    for name, service in CONTAINERS.items():
        given = variables(kind("Deployment")[name])
        # POSTGRES_PASSWORD: only to be put into CONTROL_DATABASE_URL (see below).
        assert given <= DEPLOYMENT_VARIABLES | {"FLOWER_BASIC_AUTH", "POSTGRES_PASSWORD"}, given - DEPLOYMENT_VARIABLES
        # What compose insists on (${VAR:?}) for the service, the Deployment gives too.
        compose_env = compose()["services"][service]["environment"]
        needed = {var for var, value in compose_env.items() if set(re.findall(r"\$\{([A-Z0-9_]+):\?", str(value)))
                  & required}  # fmt: skip
        if service != "api":  # compose gives every part every variable; only the API reads the control plane
            needed -= {"CONTROL_DATABASE_URL"}
        assert needed <= given, (name, needed - given)
        # Every variable the ConfigMap sets is valid for the gateway's Config.
    Config(_env_file=None, **{key.lower(): value for key, value in config["data"].items()})  # type: ignore[arg-type]


def expanded(value: str, env: dict[str, str]) -> str:
    """A container's variable as Kubernetes gives it: ``$(NAME)`` is NAME's value."""
    return re.sub(r"\$\(([A-Z0-9_]+)\)", lambda found: env[found.group(1)], value)


def test_the_control_plane_is_the_postgres_statefulset_its_password_from_the_secret() -> None:
    (postgres,) = kind("StatefulSet").values()
    server = container(postgres)
    env = {entry["name"]: entry for entry in server["env"]}
    # Its data on a volume claimed per pod, PGDATA a folder inside it (initdb refuses a
    # folder holding the volume's lost+found).
    (claim,) = postgres["spec"]["volumeClaimTemplates"]
    (mount,) = [mount for mount in server["volumeMounts"] if mount["name"] == claim["metadata"]["name"]]
    assert env["PGDATA"]["value"].startswith(mount["mountPath"] + "/")
    user, database = env["POSTGRES_USER"]["value"], env["POSTGRES_DB"]["value"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert server[probe]["exec"]["command"] == ["pg_isready", "-U", user, "-d", database]
    # The same image as compose's service, reached through a Service on its port.
    assert server["image"] == compose()["services"]["postgres"]["image"]
    service = kind("Service")[postgres["spec"]["serviceName"]]
    assert service["spec"]["selector"].items() <= postgres["spec"]["template"]["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]

    # The API's URL names that Service, user and database; its password is the server's
    # own secret key, put in by Kubernetes (declared before the URL, as $(NAME) needs).
    api = container(kind("Deployment")["llm-api"])
    names = [entry["name"] for entry in api["env"]]
    given = {entry["name"]: entry for entry in api["env"]}
    assert given["POSTGRES_PASSWORD"]["valueFrom"] == env["POSTGRES_PASSWORD"]["valueFrom"]
    assert names.index("POSTGRES_PASSWORD") < names.index("CONTROL_DATABASE_URL")
    url = expanded(given["CONTROL_DATABASE_URL"]["value"], {"POSTGRES_PASSWORD": "0123abcd"})
    config = Config(_env_file=None, control_database_url=url)  # type: ignore[call-arg]
    parsed = make_url(config.control_database)
    assert (parsed.host, parsed.port, parsed.username, parsed.password, parsed.database) == (
        service["metadata"]["name"], port["port"], user, "0123abcd", database
    )  # fmt: skip
    assert "0123abcd" not in shown(config.control_database)
    # The workers and Flower never read the control plane: they are not given its password.
    for name in ("llm-worker-default", "llm-flower"):
        assert not {"POSTGRES_PASSWORD", "CONTROL_DATABASE_URL"} & variables(kind("Deployment")[name])


def test_the_probes_and_the_scaler_ask_for_paths_the_api_serves() -> None:
    app = create_app(Config(_env_file=None))  # type: ignore[call-arg]
    paths = set(app.openapi()["paths"])
    api = container(kind("Deployment")["llm-api"])
    assert {api["readinessProbe"]["httpGet"]["path"], api["livenessProbe"]["httpGet"]["path"]} <= paths
    (scaled,) = kind("ScaledObject").values()
    assert scaled["spec"]["scaleTargetRef"]["name"] in kind("Deployment")
    assert scaled["spec"]["minReplicaCount"] == 0  # to zero when idle
    (trigger,) = scaled["spec"]["triggers"]
    url = httpx.URL(trigger["metadata"]["url"])
    service = kind("Service")[url.host.split(".")[0]]
    assert url.port == service["spec"]["ports"][0]["port"] and url.path in paths
    assert url.host.split(".")[1] == yaml.safe_load((K8S / "kustomization.yaml").read_text())["namespace"]
    # One worker's slots: the target is WORKER_CONCURRENCY, and the field one Signals has.
    (config,) = kind("ConfigMap").values()
    assert trigger["metadata"]["targetValue"] == config["data"]["WORKER_CONCURRENCY"]
    assert trigger["metadata"]["valueLocation"].split(".")[-1] in Signals(*[0] * 7).as_dict()
    auth = kind("TriggerAuthentication")[trigger["authenticationRef"]["name"]]
    assert trigger["metadata"]["authMode"] == "bearer" and auth["spec"]["secretTargetRef"][0]["parameter"] == "token"
    # KEDA's token is the API's METRICS_TOKEN (/scaling answers admin keys and it, not a tenant's key).
    secret = auth["spec"]["secretTargetRef"][0]
    given = {env["name"]: env.get("valueFrom", {}).get("secretKeyRef") for env in api.get("env", [])}
    assert given["METRICS_TOKEN"] == {"name": secret["name"], "key": secret["key"]}


def test_prometheus_scrapes_the_api_with_its_token_and_loads_the_same_alerting_rules() -> None:
    (rule,) = kind("PrometheusRule").values()
    alerts = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"], "deploy/k8s/alerts.yaml is behind: make k8s-alerts"
    (monitor,) = kind("ServiceMonitor").values()
    # It selects the API's Service (and no other), on a port it has, for the path the API serves.
    wanted = monitor["spec"]["selector"]["matchLabels"].items()
    selected = [
        name for name, service in kind("Service").items() if wanted <= service["metadata"].get("labels", {}).items()
    ]
    assert selected == ["llm-api"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in kind("Service")["llm-api"]["spec"]["ports"]}
    app = create_app(Config(_env_file=None))  # type: ignore[call-arg]
    assert endpoint["path"] in app.openapi()["paths"]
    # /metrics answers METRICS_TOKEN: the ServiceMonitor sends the API's own.
    api = container(kind("Deployment")["llm-api"])
    given = {env["name"]: env.get("valueFrom", {}).get("secretKeyRef") for env in api.get("env", [])}
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": given["METRICS_TOKEN"]}
    # The scrape's job is the Service's name: the job the rules ask for.
    down = next(r for group in alerts["groups"] for r in group["rules"] if r.get("alert") == "LLMApiDown")
    assert set(re.findall(r'job="([^"]+)"', down["expr"])) == set(selected)


def test_the_cluster_overlay_points_the_gateway_at_every_node_and_the_sentinels() -> None:
    overlay = yaml.safe_load((K8S / "cluster" / "kustomization.yaml").read_text())
    assert overlay["resources"] == ["../"]
    (patch,) = overlay["patches"]
    assert patch["target"] == {"kind": "ConfigMap", "name": "llm-api-config"}
    data = dict(kind("ConfigMap")["llm-api-config"]["data"])
    for op in yaml.safe_load(patch["patch"]):  # JSON patch, as kustomize applies it
        key = op["path"].removeprefix("/data/")
        assert op["op"] in {"add", "replace", "remove"} and (op["op"] == "add") != (key in data), op
        if op["op"] == "remove":
            del data[key]
        else:
            data[key] = op["value"]
    config = Config(_env_file=None, **{key.lower(): value for key, value in data.items()})  # type: ignore[arg-type]
    assert len(config.rabbit_mq_nodes) == 3 and len({host for host, _ in config.rabbit_mq_nodes}) == 3
    assert config.quorum_queues and config.broker_url.count("amqp://") == 3
    assert [port for _, port in config.sentinels] == [26379] * 3 and config.redis_replica_acks == 1
