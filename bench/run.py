"""What the queue costs: the same load, direct to a fake model server and through the system.

    python -m bench.run            # the full run, about 10 minutes
    python -m bench.run --quick    # under a minute: the smoke run the tests use
    python -m bench.run --paths direct,rabbitmq --scenarios b   # one scenario, some paths

Paths, measured in the same run and on the same fake model server, one after another:
  direct    the load generator calls the model server itself (the physical limit)
  rabbitmq  API -> RabbitMQ -> worker -> model server -> Redis -> API
  valkey    the same on the embedded Valkey (broker and result store)
  traced    rabbitmq with OpenTelemetry tracing on, every span sent over OTLP/HTTP to a
            sink that drops them (what tracing costs the gateway's own processes)
  usual     FastAPI + Celery as tutorials write it (bench/usual_app.py)
  litellm   LiteLLM's proxy (bench/litellm_proxy.py), in (a) only, installed on demand into a
            virtualenv of its own; beside it (a) measures the direct path too

Scenarios: (a) latency (the gateway's paths on /generate and on /v1/chat/completions),
(b) throughput, sweep, (c) capacity, (d) scaling, (e) time to first token, (f) a 10,000-line
batch beside interactive requests.

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
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench import litellm_proxy, loadgen, report
from testing.fake_model_server import free_port
from testing.otlp_collector import Collector
from testing.processes import (
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
SYSTEMS = ("rabbitmq", "valkey", "usual", "traced")
PROXIES = ("litellm",)  # other gateways, on the same model server: (a) only
PATHS = ("direct", *SYSTEMS, *PROXIES)
DEFAULT_PATHS = ("direct", "rabbitmq", "valkey", "usual")  # "traced" and "litellm" when asked for
SCENARIOS = ("a", "b", "sweep", "c", "d", "e", "f", "g")
SYSTEM_BODY = {"content": "hi", "meta": {"tokens_limit": 16, "model": "fake-model"}}
DIRECT_BODY = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
WORKER_SLOTS = {"rabbitmq": 64, "valkey": 64, "usual": os.cpu_count() or 1, "traced": 64}


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
    batch_lines: int = 10_000  # (f): the batch's size
    batch_interactive: int = 400  # (f): interactive requests at concurrency 4, alone and beside the batch
    neighbour_model_seconds: float = 0.2  # (g): the model's time per job
    neighbour_slots: int = 16  # (g): the worker's slots
    neighbour_requests: int = 200  # (g): the quiet tenant's requests at concurrency 4, alone
    neighbour_seconds: float = 30  # (g): how long the noisy tenant floods (concurrency 256), the quiet one beside
    share_seconds: float = 20  # (g): how long two tenants of weights 3 and 1 both flood
    # A smoke run (--quick) checks that each path answers, not how fast: (b) then counts
    # the answers to every request sent in its seconds, however late (a slow path on a
    # busy machine answered none within 2 s, and so reported nothing).
    smoke: bool = False


QUICK = Sizes(
    20, 2, 50, 0.2, 30, 32, 0.1, 2, (1, 8), 1, 10, batch_lines=200, batch_interactive=20,
    neighbour_requests=8, neighbour_seconds=4, share_seconds=3, smoke=True,
)  # fmt: skip
NEIGHBOURS = """\
tenants:
  - {name: noisy, weight: 1, keys: [bench-noisy]}
  - {name: quiet, weight: 1, keys: [bench-quiet]}
  - {name: three, weight: 3, keys: [bench-three]}
  - {name: one, weight: 1, keys: [bench-one]}
"""


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
    try:  # a process that ends between the look and the read has none
        found = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        found = []
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
    args = [str(BIN / "python"), "-m", "testing.fake_model_server", "--port", str(port), "--latency", str(latency)]
    args += ["--chunk-delay", str(chunk_delay)]
    process = processes.spawn("fake-model", args, {})
    url = f"http://127.0.0.1:{port}"
    wait_for_http(process, f"{url}/v1/models")
    try:
        yield url
    finally:
        process.stop()


class System:
    """One path's API and workers (path `kind`), on their own queue and key prefix;
    kept for every scenario of a run."""

    def __init__(self, processes: Processes, kind: str, model_url: str, extra: dict[str, str] | None = None) -> None:
        self.processes = processes
        self.kind = kind
        self.model_url = model_url
        self.extra = extra or {}
        self.target = Target("", SYSTEM_BODY)
        self._started: list[Any] = []
        self._valkey: subprocess.Popen[bytes] | None = None
        self._sink: Collector | None = None  # the traced path's OTLP sink
        self._env: dict[str, str] = {}

    def __enter__(self) -> System:
        try:
            self.start()
        except BaseException:
            self.stop()  # what did start (the Valkey server, a worker) does not outlive the run
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        run = uuid.uuid4().hex[:8]
        self._run = run
        env = self._env = {
            "ENV_FILE": "",
            "QUEUE_NAME": f"bench-{run}",
            "REDIS_PREFIX": f"bench-{run}",
            "INNER_LLM_URL": self.model_url,
            "WAIT_TIMEOUT": "600",
            "FILE_STORE_URL": str(self.processes.log_dir / f"files-{run}"),
            **self.extra,
        }
        self.target = target = Target("", SYSTEM_BODY)
        if self.kind == "traced":
            self._sink = Collector(keep=False)
            env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": self._sink.url}
        if self.kind == "valkey":
            self._valkey, (host, port) = start_valkey(self.processes.log_dir / f"valkey-{run}")
            env |= {"RABBIT_MQ_HOST": "", "REDIS_HOST": host, "REDIS_PORT": str(port)}
            target.pids["valkey"] = self._valkey.pid
        else:
            env |= {"RABBIT_MQ_HOST": "127.0.0.1", "REDIS_HOST": "127.0.0.1", "REDIS_PORT": "6379"}
            target.pids |= {"rabbitmq": service_pid("beam.smp"), "redis": service_pid("redis-server")}
        self.add_worker()
        port = free_port()
        if self.kind == "usual":
            args = [str(BIN / "uvicorn"), "bench.usual_app:app", "--port", str(port)]
            api = self.processes.spawn("usual-api", args, env)
            wait_for_http(api, f"http://127.0.0.1:{port}/openapi.json")
        else:
            api = self.processes.api(env, port)
        self._started.append(api)
        target.url = f"http://127.0.0.1:{port}/generate"
        target.pids["api"] = api.popen.pid

    def add_worker(self) -> None:
        """One more worker process on this system's queue."""
        index = sum(1 for name in self.target.pids if name.startswith("worker"))
        if self.kind == "usual":
            args = [str(BIN / "celery"), "-A", "bench.usual_app:celery", "worker", "-l", "info"]
            args += ["-n", f"usual{index}-{self._run}@%h"]
            worker = self.processes.spawn("usual-worker", args, self._env)
            wait_for_output(worker, " ready.")
        else:
            worker = self.processes.worker(self._env, name=f"worker{index}")
        self._started.append(worker)
        self.target.pids[f"worker{index or ''}"] = worker.popen.pid

    def stop(self) -> None:
        for process in self._started:
            process.stop()
        self._started = []
        if self._sink is not None:
            print(f"bench: traced: {self._sink.requests} OTLP exports, {self._sink.bytes / 1e6:.1f} MB", flush=True)
            self._sink.stop()
            self._sink = None
        remove_traces(config_from_env(self._env))
        if self._valkey:
            self._valkey.terminate()
            self._valkey.wait(10)
            shutil.rmtree(self.processes.log_dir / f"valkey-{self._run}", ignore_errors=True)
            self._valkey = None

    def restart(self) -> None:
        """Afresh, without the jobs still queued or running (a path that fell behind)."""
        self.stop()
        self.start()

    def chat_target(self) -> Target:
        """Its OpenAI-compatible chat endpoint, sent what the direct path and LiteLLM are sent."""
        return Target(self.target.url.removesuffix("/generate") + "/v1/chat/completions", DIRECT_BODY, self.target.pids)


def set_model(model_url: str, latency: float, chunk_delay: float = 0.0) -> None:
    """The fake model server's latency, and the delay between streamed chunks, from now on."""
    httpx.put(f"{model_url}/settings", json={"latency": latency, "chunk_delay": chunk_delay}).raise_for_status()


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
    return summary(path, "a", outcome, endpoint=urlsplit(target.url).path)


def scenario_b(target: Target, path: str, sizes: Sizes) -> dict[str, Any]:
    load = loadgen.for_duration(target.url, target.body, 64, sizes.throughput_seconds, every_sent=sizes.smoke)
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


def scenario_d(system: System, path: str, sizes: Sizes) -> dict[str, Any]:
    """Throughput with the system's one worker, then with a second one added."""
    rates = {}
    for workers in (1, 2):
        if workers == 2:
            system.add_worker()
        target = system.target
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


def run_batch(api: str, lines: int) -> tuple[str, float]:
    """Upload and create a batch of `lines` chat lines; its id and when it was created."""
    body = b"".join(
        json.dumps({"custom_id": f"line-{n}", "method": "POST", "url": "/v1/chat/completions",
                    "body": {**DIRECT_BODY, "messages": [{"role": "user", "content": f"line {n}"}]}}).encode() + b"\n"
        for n in range(lines)
    )  # fmt: skip
    with httpx.Client(base_url=f"{api}/v1", timeout=120) as client:
        uploaded = client.post("/files", files={"file": ("bench.jsonl", body)}, data={"purpose": "batch"})
        uploaded.raise_for_status()
        created = client.post(
            "/batches",
            json={
                "input_file_id": uploaded.json()["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        )
        created.raise_for_status()
        return created.json()["id"], time.monotonic()


def scenario_f(target: Target, path: str, sizes: Sizes) -> dict[str, Any]:
    """A batch of `batch_lines` lines on a 0 s model: its lines per second, and the
    latency of interactive requests (concurrency 4) while it runs, against the same
    alone just before and just after, in the same run."""
    api = target.url.removesuffix("/generate")
    interactive = loadgen.closed_loop(target.url, target.body, 4, sizes.batch_interactive)
    before, _ = measured(target, interactive)
    batch_id, created = run_batch(api, sizes.batch_lines)
    beside, _ = measured(target, loadgen.closed_loop(target.url, target.body, 4, sizes.batch_interactive))
    with httpx.Client(base_url=f"{api}/v1", timeout=30) as client:
        deadline = time.monotonic() + 1800
        while True:
            batch = client.get(f"/batches/{batch_id}").json()
            if batch["status"] in ("completed", "failed", "expired", "cancelled") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    seconds = time.monotonic() - created
    counts = batch.get("request_counts") or {}
    after, _ = measured(target, loadgen.closed_loop(target.url, target.body, 4, sizes.batch_interactive))
    alone = [*summary(path, "f", before)["latencies_ms"], *summary(path, "f", after)["latencies_ms"]]
    row = summary(path, "f", beside)
    alone_p50, alone_p99 = (round(report.percentile(alone, q), 2) for q in (0.5, 0.99))
    return row | {
        "batch_status": batch["status"],
        "batch_lines": sizes.batch_lines,
        "batch_completed": counts.get("completed"),
        "batch_seconds": round(seconds, 1),
        "batch_lines_per_s": round((counts.get("completed") or 0) / seconds, 1),
        "alone_p50_ms": alone_p50,
        "alone_p99_ms": alone_p99,
        "batch_running_during_beside": beside.seconds < seconds,
    }


def scenario_g(processes: Processes, model: str, path: str, sizes: Sizes) -> dict[str, Any]:
    """Noisy neighbour, on a 0.2 s model and one worker of `neighbour_slots` slots: the
    quiet tenant's latency (concurrency 4) alone and while the noisy one floods
    (concurrency 256), with tenants' turns and without (FAIR_SHARE=false); then two
    tenants of weights 3 and 1, both flooding (concurrency 128 each): their shares of the
    jobs done."""
    keys = processes.log_dir / "tenants.yaml"
    keys.write_text(NEIGHBOURS)
    auth = {name: {"Authorization": f"Bearer bench-{name}"} for name in ("noisy", "quiet", "three", "one")}
    env = {"API_KEYS_FILE": str(keys), "WORKER_CONCURRENCY": str(sizes.neighbour_slots)}

    async def beside(url: str, body: dict[str, Any]) -> tuple[loadgen.Outcome, loadgen.Outcome]:
        flood = asyncio.ensure_future(
            loadgen.for_duration(url, body, 256, sizes.neighbour_seconds, headers=auth["noisy"])
        )
        # The quiet tenant's requests start once the flood's backlog is there, and stop
        # before the flood does: all of them are sent beside it.
        margin = min(2.0, sizes.neighbour_seconds / 4)
        await asyncio.sleep(margin)
        quiet = await loadgen.for_duration(
            url, body, 4, sizes.neighbour_seconds - 2 * margin, grace=60, headers=auth["quiet"], every_sent=True
        )
        return quiet, await flood

    async def shares(url: str, body: dict[str, Any]) -> list[loadgen.Outcome]:
        return list(await asyncio.gather(*(
            loadgen.for_duration(url, body, 128, sizes.share_seconds, headers=auth[name]) for name in ("three", "one")
        )))  # fmt: skip

    set_model(model, sizes.neighbour_model_seconds)
    row: dict[str, Any] = {}
    for fair in ("true", "false"):
        with System(processes, path, model, env | {"FAIR_SHARE": fair}) as system:
            url, body = system.target.url, system.target.body
            asyncio.run(loadgen.closed_loop(url, body, 8, 16, headers=auth["quiet"]))  # warm up
            if fair == "true":
                alone = asyncio.run(loadgen.closed_loop(url, body, 4, sizes.neighbour_requests, headers=auth["quiet"]))
                quiet, flood = asyncio.run(beside(url, body))
                three, one = asyncio.run(shares(url, body))
                row = summary(path, "g", quiet) | {
                    "alone_p50_ms": round(report.percentile([x * 1000 for x in alone.latencies], 0.5), 2),
                    "alone_p99_ms": round(report.percentile([x * 1000 for x in alone.latencies], 0.99), 2),
                    "alone_ok": alone.ok,
                    "flood_ok": flood.ok,
                    "three_ok": three.ok,
                    "one_ok": one.ok,
                    "three_share": round(three.ok / max(1, three.ok + one.ok), 3),
                }
            else:
                unfair, _ = asyncio.run(beside(url, body))
                latencies = [x * 1000 for x in unfair.latencies]
                row |= {
                    "unfair_p50_ms": round(report.percentile(latencies, 0.5), 2),
                    "unfair_p99_ms": round(report.percentile(latencies, 0.99), 2),
                }
    return row


def sweep(target: Target, path: str, sizes: Sizes) -> list[dict[str, Any]]:
    rows = []
    for clients in sizes.sweep:
        outcome, _ = measured(target, loadgen.for_duration(target.url, target.body, clients, sizes.sweep_seconds))
        row = summary(path, "sweep", outcome, clients=clients)
        row.pop("latencies_ms")
        rows.append(row)
    return rows


def run_scenarios(
    stack: ExitStack,
    processes: Processes,
    model: str,
    model_pid: int,
    paths: list[str],
    scenarios: set[str],
    sizes: Sizes,
) -> list[dict[str, Any]]:
    """Every scenario asked for, scenario by scenario, each on every path in turn.

    One fake model server and one system per path serve every scenario: the model's
    latency is set before each, and (d) adds a second worker to the same system. Another
    gateway (LiteLLM's proxy) serves (a) alone, and is left out when it cannot start."""
    systems = {path: stack.enter_context(System(processes, path, model)) for path in paths if path in SYSTEMS}
    proxies: dict[str, Target] = {}
    if "litellm" in paths:
        proxy = litellm_proxy.start(processes, model, DIRECT_BODY["model"])
        if proxy is not None:
            stack.callback(proxy.stop)
            proxies["litellm"] = Target(
                f"{proxy.url}/v1/chat/completions", DIRECT_BODY, {"litellm": proxy.process.popen.pid}
            )
    paths = [path for path in paths if path not in PROXIES or path in proxies]

    def target(path: str) -> Target:
        if path == "direct":
            return direct(model, model_pid)
        return proxies[path] if path in proxies else systems[path].target

    warm = [system.target for system in systems.values()] + list(proxies.values())
    warm += [system.chat_target() for path, system in systems.items() if path != "usual"]
    for each in warm:
        asyncio.run(loadgen.closed_loop(each.url, each.body, 8, 50))  # warm up
    rows: list[dict[str, Any]] = []
    for path in paths if scenarios & {"a", "b", "sweep"} else []:
        print(f"bench: {path}: {'latency' if path in proxies else 'latency, throughput, sweep'}", flush=True)
        if "a" in scenarios:
            rows.append(scenario_a(target(path), path, sizes))
            if path in systems and path != "usual":  # the request LiteLLM serves too; the usual app has none
                rows.append(scenario_a(systems[path].chat_target(), f"{path} chat", sizes))
        if path in proxies:
            continue
        if "b" in scenarios:
            rows.append(scenario_b(target(path), path, sizes))
        if "sweep" in scenarios:
            rows.extend(sweep(target(path), path, sizes))
    paths = [path for path in paths if path not in proxies]
    if "c" in scenarios:
        set_model(model, sizes.capacity_model_seconds)
        for path in paths:
            print(f"bench: {path}: capacity", flush=True)
            row = scenario_c(target(path), path, sizes, model)
            rows.append(row)
            if row["ok"] < row["requests"] and path in systems:
                systems[path].restart()  # its unanswered jobs would weigh on what follows
    if "d" in scenarios:
        set_model(model, sizes.scaling_model_seconds)
        for path, system in systems.items():
            print(f"bench: {path}: scaling", flush=True)
            rows.append(scenario_d(system, path, sizes))
    if "e" in scenarios:
        set_model(model, 0.0, sizes.token_seconds)
        for path in paths:
            if path == "usual":
                continue  # it has no streaming
            print(f"bench: {path}: time to first token", flush=True)
            rows.append(scenario_e(target(path).url.replace("/generate", "/v1/chat/completions"), path, sizes))
    if "f" in scenarios:
        set_model(model, 0.0)
        for path, system in systems.items():
            if path == "usual":
                continue  # it has no batches
            print(f"bench: {path}: a batch beside interactive requests", flush=True)
            rows.append(scenario_f(system.target, path, sizes))
    if "g" in scenarios:
        for path in systems:
            if path == "usual":
                continue  # it has no tenants
            print(f"bench: {path}: noisy neighbour", flush=True)
            rows.append(scenario_g(processes, model, path, sizes))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny loads: a smoke run")
    parser.add_argument(
        "--paths", default=",".join(DEFAULT_PATHS), help="comma-separated subset of " + ", ".join(PATHS)
    )
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of " + ", ".join(SCENARIOS)
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else Sizes()
    paths = [p for p in args.paths.split(",") if p]
    scenarios = {s for s in args.scenarios.split(",") if s}
    if unknown := (set(paths) - set(PATHS)) | (scenarios - set(SCENARIOS)):
        parser.error(f"unknown path or scenario: {', '.join(sorted(unknown))}")
    if "litellm" in paths and "a" not in scenarios:
        print("bench: litellm: measured in (a) only; left out", flush=True)
        paths.remove("litellm")
    if "litellm" in paths and "direct" not in paths:  # what it adds is measured against the direct path
        paths.insert(0, "direct")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = RESULTS / f"{stamp}-logs"  # each process's output, for when a path misbehaves
    logs.mkdir(parents=True)
    processes = Processes(logs)
    started = time.monotonic()
    try:
        with fake_model(processes, 0.0) as model, ExitStack() as stack:
            model_pid = processes.started[-1].popen.pid
            rows = run_scenarios(stack, processes, model, model_pid, paths, scenarios, sizes)
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
