"""`make run`: start the API, a worker and Flower, plus embedded parts for what is not configured.

The processes run under honcho (Procfile): their logs are prefixed with their
name, and Ctrl-C stops all of them.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path

from local_stack.model_file import ensure_default_model
from local_stack.settings import LocalStack
from shared.config import Config

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Plan:
    """Which Procfile processes to start, with which extra environment."""

    processes: list[str] = field(default_factory=lambda: ["api", "worker", "flower"])
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, str] = field(default_factory=dict)  # passed on, never written to disk
    extra_processes: dict[str, str] = field(default_factory=dict)  # beside the Procfile's: name -> command
    notes: list[str] = field(default_factory=list)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Refused(SystemExit):
    """A setting the run command will not start with."""


def plan(config: Config, local: LocalStack) -> Plan:
    """What to start: embedded Valkey and model server where nothing is configured."""
    configured = config.model_fields_set
    result = Plan()
    # Flower shows every job's arguments and result, and can stop workers.
    if local.flower_basic_auth:
        result.secret_env["FLOWER_BASIC_AUTH"] = local.flower_basic_auth.get_secret_value()
        result.notes.append("Flower: basic auth (FLOWER_BASIC_AUTH)")
    elif local.flower_host not in LOOPBACK:
        raise Refused(
            f"llm-api: Flower would listen on {local.flower_host} without a password: set"
            " FLOWER_BASIC_AUTH=user:password, or FLOWER_HOST=127.0.0.1"
        )
    if config.compaction_secret is None:
        # Compaction items last as long as this run (every API process of it the same secret).
        result.secret_env["COMPACTION_SECRET"] = secrets.token_urlsafe(32)
        result.notes.append("compaction: a secret of this run's own (COMPACTION_SECRET unset)")
    if config.sentinels:
        sentinels = ", ".join(f"{host}:{port}" for host, port in config.sentinels)
        result.notes.append(f"result store: Redis master {config.redis_sentinel_master!r} of the Sentinels {sentinels}")
    elif "redis_host" not in configured:
        result.processes.insert(0, "valkey")
        result.env |= {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(local.embedded_redis_port), "REDIS_DB": "0"}
        result.notes.append(f"result store: embedded Valkey on 127.0.0.1:{local.embedded_redis_port}")
    else:
        result.notes.append(f"result store: Redis at {config.redis_host}:{config.redis_port}")
    if not config.rabbit_mq_host:
        result.env["RABBIT_MQ_HOST"] = ""
        result.notes.append("broker: the result store (Redis protocol)")
    else:
        nodes = ", ".join(f"{host}:{port}" for host, port in config.rabbit_mq_nodes)
        result.notes.append(f"broker: RabbitMQ at {nodes}")
    if "inner_llm_url" not in configured:
        # MODEL_SERVERS embedded servers of the one model (docs/servers.md), each on a port of its own.
        ports = [local.embedded_model_port + n for n in range(local.model_servers)]
        for n, port in enumerate(ports):
            name = "model" if n == 0 else f"model{n + 1}"
            result.processes.insert(n, name)
            if n:
                result.extra_processes[name] = f"EMBEDDED_MODEL_PORT={port} python -m local_stack.model_server"
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        result.env["INNER_LLM_URL"] = ",".join(urls)
        result.env["INNER_LLM_SLOTS"] = str(local.model_parallel)
        model = local.model_path or "SmolLM2-135M-Instruct (default)"
        result.notes.append(f"model server: embedded llama.cpp at {', '.join(urls)} serving {model}")
    else:
        result.notes.append(f"model server: {config.inner_llm_url}")
    result.env |= {
        "API_HOST": local.api_host,
        "API_PORT": str(local.api_port),
        "FLOWER_HOST": local.flower_host,
        "FLOWER_PORT": str(local.flower_port),
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    result.processes.append("ready")
    return result


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.chdir(ROOT)
    config, local = Config.read_from_env(), LocalStack.read_from_env()
    steps = plan(config, local)
    for note in steps.notes:
        print(f"llm-api: {note}", flush=True)
    if "model" in steps.processes and not local.model_path:
        ensure_default_model(Path(local.cache_dir))
    run_dir = Path(local.cache_dir) / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    env_file = run_dir / "env"
    env_file.write_text("".join(f"{key}={value!r}\n" for key, value in steps.env.items()))
    os.environ.update(steps.secret_env)
    procfile = Path("Procfile")
    if steps.extra_processes:
        procfile = run_dir / "Procfile"
        extra = "".join(f"{name}: {command}\n" for name, command in steps.extra_processes.items())
        procfile.write_text(Path("Procfile").read_text() + extra)
    honcho = str(Path(sys.executable).parent / "honcho")
    command = [honcho, "start", "--procfile", str(procfile), "--app-root", str(ROOT), "--env", str(env_file)]
    os.execv(honcho, [*command, *steps.processes])


if __name__ == "__main__":
    main()
