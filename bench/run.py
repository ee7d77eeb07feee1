"""What the queue costs: the same load, direct to a fake model server and through the system.

    python -m bench.run            # the full run, about 10 minutes
    python -m bench.run --quick    # under a minute: the smoke run the tests use
    python -m bench.run --paths direct,rabbitmq --scenarios b   # one scenario, some paths

Paths, measured in the same run and on the same fake model server, one after another:
  direct    the load generator calls the model server itself (the physical limit)
  rabbitmq  API -> RabbitMQ -> worker -> model server -> Redis -> API
  valkey    the same on the embedded Valkey (broker and result store)
  usual     FastAPI + Celery as tutorials write it (bench/usual_app.py)

Writes bench/results/<time>.json, .md and .png (git ignores the folder).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import loadgen, report
from tests.fake_model_server import free_port
from tests.processes import (
    Processes,
    config_from_env,
    remove_traces,
    start_valkey,
    wait_for_http,
    wait_for_output,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
SYSTEMS = ("rabbitmq", "valkey", "usual")
PATHS = ("direct", *SYSTEMS)
SCENARIOS = ("a", "b", "sweep", "c", "d", "e")
SYSTEM_BODY = {"content": "hi", "meta": {"tokens_limit": 16, "model": "fake-model"}}
DIRECT_BODY = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
WORKER_SLOTS = {"rabbitmq": 64, "valkey": 64, "usual": os.cpu_count() or 1}


@dataclass
class Sizes:
    """How much load each scenario sends."""

    latency_requests: int = 400
    throughput_seconds: float = 15
    capacity_clients: int = 1000
    capacity_model_seconds: float = 2.0
    capacity_deadline: float = 90
    scaling_clients: int = 256
    scaling_model_seconds: float = 0.5
    scaling_seconds: float = 15
    sweep: tuple[int, ...] = (1, 8, 32, 64, 128, 256)
    sweep_seconds: float = 5
    ttft_samples: int = 100
    token_seconds: float = 0.02  # the fake model's time per streamed token in (e)


QUICK = Sizes(20, 2, 50, 0.2, 30, 32, 0.1, 2, (1, 8), 1, 10)


@dataclass
class Target:
    """Where to send load, and the processes whose CPU and memory count."""

    url: str
    body: dict[str, Any]
    pids: dict[str, int] = field(default_factory=dict)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (prefork workers) so far."""
    total = 0.0
    for each in [pid, *descendants(pid)]:
        try:
            fields = (Path("/proc") / str(each) / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def descendants(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = [int(c) for c in children.read_text().split()] if children.exists() else []
    return found + [d for c in found for d in descendants(c)]


def peak_rss_mb(pid: int) -> float:
    for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def service_pid(pattern: str) -> int:
    return int(subprocess.run(["pgrep", "-of", pattern], capture_output=True, text=True, check=True).stdout.split()[0])


@contextmanager
def fake_model(processes: Processes, latency: float, chunk_delay: float = 0.0) -> Iterator[str]:
    port = free_port()
    args = [str(BIN / "python"), "-m", "tests.fake_model_server", "--port", str(port), "--latency", str(latency)]
    args += ["--chunk-delay", str(chunk_delay)]
    process = processes.spawn("fake-model", args, {})
    url = f"http://127.0.0.1:{port}"
    wait_for_http(process, f"{url}/v1/models")
    try:
        yield url
    finally:
        process.stop()


@contextmanager
def system(processes: Processes, kind: str, model_url: str, workers: int = 1) -> Iterator[Target]:
    """One API and `workers` workers of path `kind`, on their own queue and key prefix."""
    run = uuid.uuid4().hex[:8]
    env = {
        "ENV_FILE": "",
        "QUEUE_NAME": f"bench-{run}",
        "REDIS_PREFIX": f"bench-{run}",
        "INNER_LLM_URL": model_url,
        "WAIT_TIMEOUT": "600",
    }
    valkey = None
    target = Target("", SYSTEM_BODY)
    if kind == "valkey":
        valkey, (host, port) = start_valkey(processes.log_dir / f"valkey-{run}")
        env |= {"RABBIT_MQ_HOST": "", "REDIS_HOST": host, "REDIS_PORT": str(port)}
        target.pids["valkey"] = valkey.pid
    else:
        env |= {"RABBIT_MQ_HOST": "127.0.0.1", "REDIS_HOST": "127.0.0.1", "REDIS_PORT": "6379"}
        target.pids |= {"rabbitmq": service_pid("beam.smp"), "redis": service_pid("redis-server")}
    started = []
    port = free_port()
    if kind == "usual":
        for index in range(workers):
            args = [
                str(BIN / "celery"),
                "-A",
                "bench.usual_app:celery",
                "worker",
                "-l",
                "info",
                "-n",
                f"usual{index}-{run}@%h",
            ]
            worker = processes.spawn("usual-worker", args, env)
            wait_for_output(worker, " ready.")
            started.append(worker)
        api = processes.spawn("usual-api", [str(BIN / "uvicorn"), "bench.usual_app:app", "--port", str(port)], env)
        wait_for_http(api, f"http://127.0.0.1:{port}/openapi.json")
    else:
        started = [processes.worker(env, name=f"worker{index}") for index in range(workers)]
        api = processes.api(env, port)
    target.url = f"http://127.0.0.1:{port}/generate"
    target.pids["api"] = api.popen.pid
    for index, worker in enumerate(started):
        target.pids[f"worker{index if workers > 1 else ''}"] = worker.popen.pid
    try:
        yield target
    finally:
        for process in [api, *started]:
            process.stop()
        remove_traces(config_from_env(env))
        if valkey:
            valkey.terminate()
            valkey.wait(10)
            shutil.rmtree(processes.log_dir / f"valkey-{run}", ignore_errors=True)


def direct(model_url: str, model_pid: int) -> Target:
    return Target(f"{model_url}/v1/chat/completions", DIRECT_BODY, {"model": model_pid})


def summary(path: str, scenario: str, outcome: loadgen.Outcome, **extra: Any) -> dict[str, Any]:
    answered = [lat for lat, status in zip(outcome.latencies, outcome.statuses, strict=True) if status == 200]
    return {
        "path": path,
        "scenario": scenario,
        "requests": len(outcome.statuses),
        "ok": outcome.ok,
        "seconds": round(outcome.seconds, 3),
        "p50_ms": round(report.percentile(answered, 0.50) * 1000, 2),
        "p99_ms": round(report.percentile(answered, 0.99) * 1000, 2),
        "throughput": round(outcome.ok / outcome.seconds, 1) if outcome.seconds else 0.0,
        "latencies_ms": [round(lat * 1000, 3) for lat in answered],
        **extra,
    }


def measured(target: Target, load: Any) -> tuple[loadgen.Outcome, dict[str, float]]:
    """Run `load` against `target`; also the CPU seconds each of its processes spent."""
    before = {name: cpu_seconds(pid) for name, pid in target.pids.items()}
    outcome = asyncio.run(load)
    return outcome, {name: cpu_seconds(pid) - before[name] for name, pid in target.pids.items()}


def scenario_a(target: Target, path: str, sizes: Sizes) -> dict[str, Any]:
    outcome, _ = measured(target, loadgen.closed_loop(target.url, target.body, 1, sizes.latency_requests))
    return summary(path, "a", outcome)


def scenario_b(target: Target, path: str, sizes: Sizes) -> dict[str, Any]:
    load = loadgen.for_duration(target.url, target.body, 64, sizes.throughput_seconds)
    outcome, cpu = measured(target, load)
    per_job = {name: round(seconds * 1000 / max(outcome.ok, 1), 3) for name, seconds in cpu.items()}
    return summary(path, "b", outcome, cpu_ms_per_job=per_job)


def scenario_c(target: Target, path: str, sizes: Sizes, model_url: str) -> dict[str, Any]:
    httpx.delete(f"{model_url}/stats")
    load = loadgen.closed_loop(
        target.url, target.body, sizes.capacity_clients, sizes.capacity_clients, sizes.capacity_deadline
    )
    outcome, _ = measured(target, load)
    peak = httpx.get(f"{model_url}/stats").json()["peak_in_flight"]
    extra: dict[str, Any] = {"model_peak_in_flight": peak}
    if "api" in target.pids:
        extra |= {"worker_slots": WORKER_SLOTS[path], "api_peak_rss_mb": round(peak_rss_mb(target.pids["api"]), 1)}
    return summary(path, "c", outcome, **extra)


def scenario_d(processes: Processes, path: str, model_url: str, sizes: Sizes) -> dict[str, Any]:
    rates = {}
    for workers in (1, 2):
        with system(processes, path, model_url, workers) as target:
            load = loadgen.for_duration(target.url, target.body, sizes.scaling_clients, sizes.scaling_seconds)
            outcome, _ = measured(target, load)
            rates[workers] = summary(path, "d", outcome)
    result = rates[2]
    result |= {
        "throughput_1_worker": rates[1]["throughput"],
        "throughput_2_workers": rates[2]["throughput"],
        "scaling": round(rates[2]["throughput"] / max(rates[1]["throughput"], 0.1), 2),
    }
    return result


async def first_token_times(url: str, body: dict[str, Any], samples: int) -> loadgen.Outcome:
    """Seconds from sending a streamed request to its first piece of content, one request at a time."""
    outcome = loadgen.Outcome()
    async with httpx.AsyncClient(timeout=60) as client:
        for _ in range(samples):
            started = time.perf_counter()
            status = 0
            async with client.stream("POST", url, json=body) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: {") and '"content"' in line:
                        status = response.status_code
                        outcome.record(started, status)
                        break
                if not status:
                    outcome.record(started, 0)
    outcome.seconds = sum(outcome.latencies)
    return outcome


def scenario_e(url: str, path: str, sizes: Sizes) -> dict[str, Any]:
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    outcome = asyncio.run(first_token_times(url, body, sizes.ttft_samples))
    row = summary(path, "e", outcome)
    row["throughput"] = 0.0  # not a throughput measure
    return row


def sweep(target: Target, path: str, sizes: Sizes) -> list[dict[str, Any]]:
    rows = []
    for clients in sizes.sweep:
        outcome, _ = measured(target, loadgen.for_duration(target.url, target.body, clients, sizes.sweep_seconds))
        row = summary(path, "sweep", outcome, clients=clients)
        row.pop("latencies_ms")
        rows.append(row)
    return rows


def _fast_model_scenarios(
    processes: Processes, paths: list[str], scenarios: set[str], sizes: Sizes
) -> list[dict[str, Any]]:
    """(a), (b) and the sweep, on a model that answers at once."""
    rows: list[dict[str, Any]] = []

    def run(target: Target, path: str) -> None:
        if "a" in scenarios:
            rows.append(scenario_a(target, path, sizes))
        if "b" in scenarios:
            rows.append(scenario_b(target, path, sizes))
        if "sweep" in scenarios:
            rows.extend(sweep(target, path, sizes))

    with fake_model(processes, 0.0) as model:
        model_pid = processes.started[-1].popen.pid
        for path in paths:
            print(f"bench: {path}: {', '.join(s for s in ('a', 'b', 'sweep') if s in scenarios)}", flush=True)
            if path == "direct":
                run(direct(model, model_pid), path)
                continue
            with system(processes, path, model) as target:
                asyncio.run(loadgen.closed_loop(target.url, target.body, 8, 50))  # warm up
                run(target, path)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny loads: a smoke run")
    parser.add_argument("--paths", default=",".join(PATHS), help="comma-separated subset of " + ", ".join(PATHS))
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of " + ", ".join(SCENARIOS)
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else Sizes()
    paths = [p for p in args.paths.split(",") if p]
    scenarios = {s for s in args.scenarios.split(",") if s}
    if unknown := (set(paths) - set(PATHS)) | (scenarios - set(SCENARIOS)):
        parser.error(f"unknown path or scenario: {', '.join(sorted(unknown))}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = RESULTS / f"{stamp}-logs"  # each process's output, for when a path misbehaves
    logs.mkdir(parents=True)
    processes = Processes(logs)
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        if scenarios & {"a", "b", "sweep"}:
            rows += _fast_model_scenarios(processes, paths, scenarios, sizes)
        if "c" in scenarios:
            with fake_model(processes, sizes.capacity_model_seconds) as model:
                model_pid = processes.started[-1].popen.pid
                for path in paths:
                    print(f"bench: {path}: capacity", flush=True)
                    if path == "direct":
                        rows.append(scenario_c(direct(model, model_pid), path, sizes, model))
                        continue
                    with system(processes, path, model) as target:
                        rows.append(scenario_c(target, path, sizes, model))
        if "d" in scenarios:
            with fake_model(processes, sizes.scaling_model_seconds) as model:
                for path in paths:
                    if path != "direct":
                        print(f"bench: {path}: scaling", flush=True)
                        rows.append(scenario_d(processes, path, model, sizes))
        if "e" in scenarios:
            with fake_model(processes, 0.0, sizes.token_seconds) as model:
                for path in paths:
                    if path == "usual":
                        continue  # it has no streaming
                    print(f"bench: {path}: time to first token", flush=True)
                    if path == "direct":
                        rows.append(scenario_e(f"{model}/v1/chat/completions", path, sizes))
                        continue
                    with system(processes, path, model) as target:
                        rows.append(scenario_e(target.url.replace("/generate", "/v1/chat/completions"), path, sizes))
    finally:
        processes.stop_all()
    machine = f"{platform.node()}, {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine,
        "quick": args.quick,
        "minutes": round((time.monotonic() - started) / 60, 1),
    }
    (RESULTS / f"{stamp}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    table = report.markdown(meta, rows)
    (RESULTS / f"{stamp}.md").write_text(table)
    report.plot(rows, RESULTS / f"{stamp}.png")
    print(table)


if __name__ == "__main__":
    main()
