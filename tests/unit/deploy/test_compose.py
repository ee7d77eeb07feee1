"""docker-compose.yml cannot run here (no Docker engine): it is checked by reading it."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from local_stack.settings import LocalStack
from shared.config import Config
from shared.control.database import engine_for, shown
from testing.processes import ROOT

pytestmark = pytest.mark.unit

GATEWAY = ("api", "worker", "flower")
DEPLOYMENT_VARIABLES = {name.upper() for name in Config.model_fields}
CONFIG_VARIABLES = DEPLOYMENT_VARIABLES | {name.upper() for name in LocalStack.model_fields}
COMPOSE_ONLY = {
    "COMPOSE_PROFILES",
    "COMPOSE_INNER_LLM_URL",
    "VLLM_MODEL",
    "GGUF_DIR",
    "GGUF_FILE",
    "GRAFANA_ADMIN_PASSWORD",
    "RABBITMQ_ERLANG_COOKIE",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def example_variables() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, re.MULTILINE))


def test_all_parts_are_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "rabbitmq", "redis", "postgres", "vllm", "llamacpp", "prometheus", "grafana", *GATEWAY
    }  # fmt: skip
    assert "management" in compose["services"]["rabbitmq"]["image"]


def test_the_monitoring_profile_scrapes_the_api_and_flower_and_shows_the_dashboard(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["prometheus"]["profiles"] == services["grafana"]["profiles"] == ["monitoring"]
    mounted = [volume.split(":")[0] for volume in services["prometheus"]["volumes"] + services["grafana"]["volumes"]]
    for path in mounted:
        assert path.startswith("./deploy/")
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())["scrape_configs"]
    assert {tuple(job["static_configs"][0]["targets"]) for job in scrape} == {("api:8000",), ("flower:5555",)}
    # /metrics answers admin keys and METRICS_TOKEN: Prometheus sends the token, from the
    # secrets folder it mounts; the API is given it.
    (api_job,) = [job for job in scrape if job["job_name"] == "llm-api"]
    secrets = next(v.split(":")[1] for v in services["prometheus"]["volumes"] if v.startswith("./deploy/secrets:"))
    assert api_job["authorization"]["credentials_file"].startswith(secrets + "/")
    assert "METRICS_TOKEN" in services["api"]["environment"]
    provisioned = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/llm-api.yml").read_text())
    assert provisioned["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert (ROOT / "deploy/grafana/dashboards/llm-api.json").exists()


def test_api_worker_and_flower_share_one_image_and_run_their_commands(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {services[name]["image"] for name in GATEWAY} == {"llm-api:latest"}
    assert all(services[name]["build"] == "." for name in GATEWAY)
    assert services["api"]["command"][:3] == ["uvicorn", "--factory", "api.main:create_app"]
    assert services["worker"]["command"][:4] == ["celery", "-A", "tasks.app", "worker"]
    assert services["flower"]["command"][:4] == ["celery", "-A", "tasks.app", "flower"]
    assert "FLOWER_BASIC_AUTH" in services["flower"]["environment"]


def test_gateway_variables_are_config_fields(compose: dict[str, Any]) -> None:
    for name in GATEWAY:
        variables = set(compose["services"][name]["environment"]) - {"ENV_FILE", "FLOWER_BASIC_AUTH"}
        assert variables <= DEPLOYMENT_VARIABLES, variables - DEPLOYMENT_VARIABLES
    # Every setting of a deployment reaches the containers (Flower's password only Flower's).
    assert set(compose["services"]["worker"]["environment"]) >= DEPLOYMENT_VARIABLES - {
        "REDIS_PASSWORD",
        "FLOWER_BASIC_AUTH",
    }


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.cluster.yml"])
def test_every_variable_compose_reads_is_in_env_example(name: str) -> None:
    text = (ROOT / name).read_text()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    assert used - example_variables() == set()


def test_env_example_documents_every_setting() -> None:
    assert example_variables() == CONFIG_VARIABLES | COMPOSE_ONLY


def test_services_wait_for_healthy_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("rabbitmq", "redis", "postgres", "vllm", "llamacpp", "api"):
        assert services[name]["healthcheck"]["test"], name
    for name in GATEWAY:
        depends = services[name]["depends_on"]
        assert {"rabbitmq", "redis"} <= set(depends)
        assert all(d["condition"] == "service_healthy" for d in depends.values())
    assert {"vllm", "llamacpp"} <= set(services["worker"]["depends_on"])
    # The API migrates and reads the control plane's database before it serves.
    assert services["api"]["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_ports_match_the_defaults(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "8000:8000" in services["api"]["ports"]
    assert "5555:5555" in services["flower"]["ports"]
    assert "5672:5672" in services["rabbitmq"]["ports"]
    assert "8670" in services["vllm"]["command"] and "8670" in services["llamacpp"]["command"]
    assert services["api"]["environment"]["INNER_LLM_URL"].endswith(":8670}")


def test_the_control_plane_is_the_postgres_service_its_password_from_env(compose: dict[str, Any]) -> None:
    services = compose["services"]
    postgres = services["postgres"]
    # Its data on a volume of its own, where the image keeps it.
    assert "postgres-data:/var/lib/postgresql/data" in postgres["volumes"] and "postgres-data" in compose["volumes"]
    # Its password required from .env, never a value in the file; user and database defaulted.
    env = postgres["environment"]
    assert env["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert env["POSTGRES_USER"] == "${POSTGRES_USER:-llm_api}" and env["POSTGRES_DB"] == "${POSTGRES_DB:-llm_api}"
    # Healthy once it accepts connections to that database as that user (compose's $$ is a $).
    check = " ".join(postgres["healthcheck"]["test"]).replace("$$", "$")
    assert "pg_isready" in check and '"${POSTGRES_USER}"' in check and '"${POSTGRES_DB}"' in check
    for name in GATEWAY:
        url = services[name]["environment"]["CONTROL_DATABASE_URL"]
        # The same three variables as the server's, and the service's name and port.
        assert set(re.findall(r"\$\{(POSTGRES_[A-Z]+)", url)) == {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
        password = re.search(r"\$\{POSTGRES_PASSWORD[^}]*\}", url)
        assert password and password.group() == env["POSTGRES_PASSWORD"]
        config = Config(_env_file=None, control_database_url=_interpolated(url))  # type: ignore[call-arg]
        parsed = make_url(config.control_database)
        assert (parsed.host, parsed.port, parsed.username, parsed.password, parsed.database) == (
            "postgres", 5432, "llm_api", "set", "llm_api"
        )  # fmt: skip
        assert engine_for(config.control_database).dialect.driver == "psycopg"
    # The URL holds the password: the API says the database's address without it.
    assert "set" not in shown(_interpolated(services["api"]["environment"]["CONTROL_DATABASE_URL"]))


def _interpolated(value: str) -> str:
    """A compose value with ``${VAR:-default}`` as its default and ``${VAR:?...}`` set."""
    value = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)
    return re.sub(r"\$\{[A-Z0-9_]+:\?[^}]*\}", "set", value)


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`docker compose -f base -f override`'s services: mappings merged, the rest replaced."""
    services = {name: dict(service) for name, service in base["services"].items()}
    for name, service in override["services"].items():
        merged = services.setdefault(name, {})
        for key, value in service.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    return services


def test_the_cluster_file_gives_the_gateway_every_rabbitmq_node_and_the_sentinels(compose: dict[str, Any]) -> None:
    cluster = yaml.safe_load((ROOT / "docker-compose.cluster.yml").read_text())
    services = _merged(compose, cluster)
    declared_nodes = re.findall(r"nodes\.\d+ = rabbit@(\S+)", (ROOT / "deploy/cluster/rabbitmq.conf").read_text())
    assert declared_nodes == ["rabbitmq", "rabbitmq-2", "rabbitmq-3"]
    for name in GATEWAY:
        env = {key: _interpolated(str(value)) for key, value in services[name]["environment"].items()}
        env.pop("ENV_FILE")
        config = Config(_env_file=None, **{k.lower(): v for k, v in env.items() if k.lower() in Config.model_fields})
        # Every node, each a service whose hostname is its node's host; quorum queues;
        # the Sentinels, each a service on Sentinel's port, watching the master's service.
        assert [host for host, _ in config.rabbit_mq_nodes] == declared_nodes
        for host in declared_nodes:
            assert services[host]["hostname"] == host and "20-cluster.conf" in " ".join(services[host]["volumes"])
        assert config.quorum_queues
        assert [port for _, port in config.sentinels] == [26379] * 3
        for host, _ in config.sentinels:
            command = " ".join(services[host]["command"])
            assert "--sentinel" in command and f"monitor {config.redis_sentinel_master} redis 6379 2" in _interpolated(
                command
            )
        depends = services[name]["depends_on"]
        assert {*declared_nodes, *(host for host, _ in config.sentinels), "redis"} <= set(depends)
    assert "--replicaof" in services["redis-replica"]["command"]
    # The cluster's API still waits for the control plane's database (the base file's one server).
    assert services["api"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    volumes = {**compose["volumes"], **cluster["volumes"]}
    for service in services.values():
        for volume in service.get("volumes", []):
            source = _interpolated(volume).split(":")[0]
            assert source.startswith("./") or source in volumes, source
            # The project's own files (./models and ./deploy/secrets are the user's).
            if source.startswith("./deploy/") and "secrets" not in source:
                assert (ROOT / source).exists(), source
