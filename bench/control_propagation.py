"""How long a change to projects and keys takes to reach another API process.

    python -m bench.control_propagation                      # SQLite, 20 rounds
    python -m bench.control_propagation --database postgresql --rounds 50

Two API processes (no worker) on this machine's RabbitMQ and Redis, and a control plane
of their own (a SQLite file, or a fresh schema of the machine's PostgreSQL). Each round
makes a project's key through the first process's Administration API, then asks the
second process with it until it is let in (every 5 ms); then deletes it through the first,
and asks the second until it is refused. Prints the least, median, 95th percentile and
most of each, in milliseconds, counted from the admin call's answer. CONTROL_POLL_SECONDS
is 60: what is measured is the change notice, not the poll.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

from testing.control_databases import ControlDatabases
from testing.fake_model_server import free_port
from testing.openai_sdk import admin_client
from testing.processes import Processes, config_from_env, remove_traces

ADMIN_KEY = "sk-admin-bench-" + uuid.uuid4().hex


def _until(done: Callable[[], bool], timeout: float = 10.0) -> float:
    started = time.monotonic()
    while not done():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"not so within {timeout}s")
        time.sleep(0.005)
    return (time.monotonic() - started) * 1000


def _status(url: str, key: str) -> int:
    return httpx.get(f"{url}/v1/files", headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code


def _summary(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return (
        f"{name}: min {ordered[0]:.1f} ms, median {statistics.median(ordered):.1f} ms, p95 {p95:.1f} ms,"
        f" max {ordered[-1]:.1f} ms ({len(ordered)} rounds)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        databases = ControlDatabases(args.database, Path(folder))
        run = uuid.uuid4().hex[:10]
        env = {
            "ENV_FILE": "", "RABBIT_MQ_HOST": "127.0.0.1", "REDIS_HOST": "127.0.0.1",
            "QUEUE_NAME": f"bench-{run}", "REDIS_PREFIX": f"bench-{run}", "FILE_STORE_URL": f"{folder}/files",
            "API_KEYS": "bench-key", "ADMIN_API_KEYS": ADMIN_KEY, "CONTROL_DATABASE_URL": databases.fresh(),
            "CONTROL_POLL_SECONDS": "60",
        }  # fmt: skip
        processes = Processes(Path(folder))
        try:
            urls = []
            for _ in range(2):
                port = free_port()
                processes.api(env, port)
                urls.append(f"http://127.0.0.1:{port}")
            first, second = urls
            org = admin_client(first, ADMIN_KEY).admin.organization
            project = org.projects.create(name="bench")
            made, refused = [], []
            for n in range(args.rounds):
                account = org.projects.service_accounts.create(project.id, name=f"round {n}")
                assert account.api_key
                key = account.api_key.value
                made.append(_until(lambda key=key: _status(second, key) == 200))
                org.projects.api_keys.delete(account.api_key.id, project_id=project.id)
                refused.append(_until(lambda key=key: _status(second, key) == 401))
            print(f"control plane on {args.database}, two API processes:")
            print(_summary("a key made on one, let in by the other after", made))
            print(_summary("a key deleted on one, refused by the other after", refused))
        finally:
            processes.stop_all()
            databases.drop()
            remove_traces(config_from_env(env))


if __name__ == "__main__":
    main()
