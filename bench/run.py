"""What the queue costs: the same load, direct to a fake model server and through the system.

    python -m bench.run            # full run
    python -m bench.run --quick    # a few seconds: the smoke run the tests use

Writes bench/results/<timestamp>.json and .md (git ignores the folder). Each path is
measured in the same run, on the same fake model server, so ratios hold even though
absolute times move from run to run on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.fake_model_server import free_port
from tests.processes import Process, Processes, config_from_env, remove_traces, start_valkey, wait_for_http

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent


@dataclass
class Measurement:
    path: str
    scenario: str
    concurrency: int
    requests: int
    ok: int
    seconds: float
    p50_ms: float
    p99_ms: float
    throughput: float
    cpu_ms_per_job: dict[str, float]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far."""
    fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def closed_loop(url: str, body: dict[str, Any], concurrency: int, total: int) -> tuple[list[float], int, float]:
    """`concurrency` clients, each sending its next request when the last is answered."""
    latencies: list[float] = []
    ok = 0
    sent = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one_client() -> None:
            nonlocal ok, sent
            while sent < total:
                sent += 1
                started = time.perf_counter()
                response = await client.post(url, json=body)
                latencies.append(time.perf_counter() - started)
                ok += response.status_code == 200

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        return latencies, ok, time.perf_counter() - started


@contextmanager
def fake_model_server(processes: Processes, latency: float) -> Iterator[str]:
    port = free_port()
    args = [str(BIN / "python"), "-m", "tests.fake_model_server", "--port", str(port), "--latency", str(latency)]
    process = processes.spawn("fake-model", args, {})
    url = f"http://127.0.0.1:{port}"
    wait_for_http(process, f"{url}/v1/models")
    yield url
    process.stop()


@contextmanager
def gateway(processes: Processes, broker: str, model_url: str, tmp: Path) -> Iterator[tuple[str, dict[str, int]]]:
    """API + one worker on `broker`; yields the API URL and the pids whose CPU is counted."""
    run = uuid.uuid4().hex[:8]
    env = {"ENV_FILE": "", "QUEUE_NAME": f"bench-{run}", "REDIS_PREFIX": f"bench-{run}", "INNER_LLM_URL": model_url}
    pids: dict[str, int] = {}
    valkey = None
    if broker == "rabbitmq":
        env |= {"RABBIT_MQ_HOST": "127.0.0.1", "REDIS_HOST": "127.0.0.1", "REDIS_PORT": "6379"}
        pids["broker"] = int(
            subprocess.run(["pgrep", "-f", "beam.smp"], capture_output=True, text=True).stdout.split()[0]
        )
        pids["redis"] = int(
            subprocess.run(["pgrep", "-x", "redis-server"], capture_output=True, text=True).stdout.split()[0]
        )
    else:
        valkey, (host, port) = start_valkey(tmp / f"valkey-{run}")
        env |= {"RABBIT_MQ_HOST": "", "REDIS_HOST": host, "REDIS_PORT": str(port)}
        pids["broker+redis"] = valkey.pid
    worker: Process = processes.worker(env)
    api_port = free_port()
    api = processes.api(env, api_port)
    pids |= {"api": api.popen.pid, "worker": worker.popen.pid}
    try:
        yield f"http://127.0.0.1:{api_port}/generate", pids
    finally:
        api.stop()
        worker.stop()
        remove_traces(config_from_env(env))
        if valkey:
            valkey.terminate()
            valkey.wait(10)


def measure(path: str, scenario: str, url: str, body: dict[str, Any], concurrency: int, total: int,
            pids: dict[str, int]) -> Measurement:  # fmt: skip
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    latencies, ok, seconds = asyncio.run(closed_loop(url, body, concurrency, total))
    cpu = {name: round((cpu_seconds(pid) - before[name]) * 1000 / total, 3) for name, pid in pids.items()}
    return Measurement(
        path, scenario, concurrency, total, ok, round(seconds, 3),
        round(percentile(latencies, 0.5) * 1000, 2), round(percentile(latencies, 0.99) * 1000, 2),
        round(total / seconds, 1), cpu,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny request counts: a smoke run")
    args = parser.parse_args()
    n_latency, n_throughput = (20, 100) if args.quick else (300, 3000)
    RESULTS.mkdir(parents=True, exist_ok=True)
    processes = Processes(RESULTS)
    results: list[Measurement] = []
    direct_body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
    system_body = {"content": "hi", "meta": {"tokens_limit": 16}}
    try:
        with fake_model_server(processes, latency=0.0) as model:
            fake_pid = processes.started[-1].popen.pid
            direct = f"{model}/v1/chat/completions"
            results.append(measure("direct", "a: latency, c=1", direct, direct_body, 1, n_latency, {"model": fake_pid}))
            results.append(
                measure("direct", "b: throughput, c=64", direct, direct_body, 64, n_throughput, {"model": fake_pid})
            )
            for broker in ("rabbitmq", "valkey"):
                with gateway(processes, broker, model, RESULTS) as (url, pids):
                    measure(broker, "warm-up", url, system_body, 8, 50, pids)
                    results.append(measure(broker, "a: latency, c=1", url, system_body, 1, n_latency, pids))
                    results.append(measure(broker, "b: throughput, c=64", url, system_body, 64, n_throughput, pids))
    finally:
        processes.stop_all()
    write(results, args.quick)


def write(results: list[Measurement], quick: bool) -> None:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    machine = f"{platform.node()} ({os.cpu_count()} cores, Python {platform.python_version()})"
    direct = {m.scenario: m for m in results if m.path == "direct"}
    lines = [
        f"Benchmark of {time.strftime('%Y-%m-%d %H:%M')} on {machine}{' (quick)' if quick else ''}",
        "",
        "| path | scenario | ok | p50 ms | p99 ms | added p50 ms | jobs/s | ratio to direct | CPU ms/job |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in results:
        base = direct[m.scenario]
        cpu = ", ".join(f"{k} {v}" for k, v in m.cpu_ms_per_job.items())
        lines.append(
            f"| {m.path} | {m.scenario} | {m.ok}/{m.requests} | {m.p50_ms} | {m.p99_ms} | "
            f"{m.p50_ms - base.p50_ms:.2f} | {m.throughput} | {m.throughput / base.throughput:.2f} | {cpu} |"
        )
    table = "\n".join(lines) + "\n"
    (RESULTS / f"{stamp}.json").write_text(json.dumps([asdict(m) for m in results], indent=2))
    (RESULTS / f"{stamp}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
