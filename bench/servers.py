"""One model, two unequal servers: this gateway against LiteLLM's proxy (its router).

    python -m bench.servers --litellm /path/to/venv/bin/litellm     # about 5 minutes
    python -m bench.servers --quick                                 # this gateway alone, 20 s
    python -m bench.servers --affinity                              # prefix affinity, 1 minute

The same two fake model servers (testing/fake_model_server.py) behind each system:
8 slots each (a ninth call waits inside the server, as in vLLM or llama.cpp), one
taking 0.05 s a call and one 0.5 s. A closed loop of 32 clients sends chat
completions for 60 s; then the fast server is killed for 15 s and started again.
Per system: each server's share of the calls, throughput, p50 and p99, and the
requests that failed (with the slow server up all along, every failure is one that
need not have been).

Systems: this gateway (API, RabbitMQ, one worker, Redis) with a registry of the two
servers; LiteLLM's proxy (`litellm --config`, one process) with the two as deployments
of one model, `routing_strategy` least-busy and then simple-shuffle, retries on
(`num_retries: 3`). LiteLLM is not a dependency of this project: install it in a
virtualenv of its own (`python -m venv /tmp/litellm && /tmp/litellm/bin/pip install
'litellm[proxy]'`) and name its `litellm` command.

With --affinity: two equal servers (8 slots, 0.2 s a call, 0.05 s when the call's
prompt prefix is in the server's prefix cache: the 40 it saw last, within 30 s), 64
conversations sharing a 2,000-character system prompt, each turn repeating its own
history; 8 clients for 20 s, through this gateway with prefix affinity on and off:
the cache hit rate, p50 and p99, each server's share. Then every client on one
conversation (a hot prefix): the shares show whether balance holds.

Writes bench/results/servers-<time>.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench import loadgen
from bench.run import BIN, RESULTS
from testing.fake_model_server import free_port
from testing.processes import Process, Processes, config_from_env, remove_traces, wait_for_http

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
FAST, SLOW = 0.05, 0.5  # seconds a call
SLOTS = 8


@dataclass
class Sizes:
    clients: int = 32
    steady_seconds: float = 60
    outage_seconds: float = 15


@dataclass
class Timeline:
    """Every request: when it was sent (seconds from the start), how long it took, its status."""

    sent: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)


class Servers:
    """The two fake model servers, as processes: the fast one can be killed and started again."""

    def __init__(self, processes: Processes) -> None:
        self.processes = processes
        self.ports = {"fast": free_port(), "slow": free_port()}
        self.running: dict[str, Process] = {}
        self.counted = {"fast": 0, "slow": 0}  # calls answered by servers since killed

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(
        self, name: str, latency: float | None = None, cached: float | None = None, cache_size: int | None = None
    ) -> None:
        latency = latency if latency is not None else (FAST if name == "fast" else SLOW)
        args = [str(BIN / "python"), "-m", "testing.fake_model_server", "--port", str(self.ports[name]),
                "--latency", str(latency), "--slots", str(SLOTS)]  # fmt: skip
        if cached is not None:
            args += ["--cached-latency", str(cached)]
        if cache_size is not None:
            args += ["--cache-size", str(cache_size)]
        self.running[name] = self.processes.spawn(f"model-{name}", args, {})
        wait_for_http(self.running[name], f"{self.url(name)}/v1/models")

    def kill(self, name: str) -> None:
        self.counted[name] += self.answered(name)
        self.running.pop(name).kill()

    def answered(self, name: str) -> int:
        return int(httpx.get(f"{self.url(name)}/stats", timeout=5).json()["answered"])

    def reset(self) -> dict[str, int]:
        """Calls answered by each server since the last reset (and their prefix-cache
        hits, as "{name} hits"); counting starts again."""
        shares = {}
        for name in ("fast", "slow"):
            stats = httpx.delete(f"{self.url(name)}/stats", timeout=5).json()
            shares[name] = self.counted[name] + int(stats["answered"])
            shares[f"{name} hits"] = int(stats["prefix_hits"])
            self.counted[name] = 0
        return shares

    def stop(self) -> None:
        for process in self.running.values():
            process.stop()
        self.running = {}


class Gateway:
    """This system: API, one worker, RabbitMQ and Redis, the two servers as one model's."""

    def __init__(self, processes: Processes, servers: Servers, affinity: bool = True) -> None:
        run = uuid.uuid4().hex[:8]
        registry = {"models": [{"name": "m", "served_name": "fake-model", "prefix_affinity": affinity, "servers": [
            {"url": servers.url("fast"), "slots": SLOTS, "name": "fast"},
            {"url": servers.url("slow"), "slots": SLOTS, "name": "slow"}]}]}  # fmt: skip
        self.env = {
            "ENV_FILE": "", "QUEUE_NAME": f"bench-{run}", "REDIS_PREFIX": f"bench-{run}",
            "RABBIT_MQ_HOST": "127.0.0.1", "REDIS_HOST": "127.0.0.1", "REDIS_PORT": "6379",
            "MODELS": json.dumps(registry), "WAIT_TIMEOUT": "120", "WORKER_CONCURRENCY": "64",
            "FILE_STORE_URL": str(processes.log_dir / f"files-{run}"),
            "SERVER_PROBE_BACKOFF": "0.5", "SERVER_PROBE_MAX": "2",
        }  # fmt: skip
        port = free_port()
        self.processes = [processes.worker(self.env, name="worker"), processes.api(self.env, port)]
        self.url = f"http://127.0.0.1:{port}/v1/chat/completions"
        self.key = "none"  # no API keys configured: any is taken

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        remove_traces(config_from_env(self.env))


class LiteLLM:
    """LiteLLM's proxy with the two servers as deployments of model "m"."""

    def __init__(self, processes: Processes, servers: Servers, command: str, strategy: str) -> None:
        deployments = [
            {"model_name": "m", "litellm_params": {"model": "openai/fake-model", "api_base": f"{servers.url(name)}/v1",
                                                   "api_key": "none", "rpm": 100000}}
            for name in ("fast", "slow")
        ]  # fmt: skip
        config = {
            "model_list": deployments,
            "router_settings": {"routing_strategy": strategy, "num_retries": 3},
            "litellm_settings": {"num_retries": 3, "request_timeout": 120, "telemetry": False},
        }
        path = processes.log_dir / f"litellm-{strategy}.json"
        path.write_text(json.dumps(config))
        port = free_port()
        env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "NO_DOCS": "True",
               "LITELLM_MASTER_KEY": "sk-bench-" + uuid.uuid4().hex}  # fmt: skip
        self.key = env["LITELLM_MASTER_KEY"]
        args = [command, "--config", str(path), "--port", str(port), "--host", "127.0.0.1", "--num_workers", "1"]
        self.process = processes.spawn(f"litellm-{strategy}", args, env)
        wait_for_http(self.process, f"http://127.0.0.1:{port}/health/liveliness", timeout=120)
        self.url = f"http://127.0.0.1:{port}/v1/chat/completions"

    def stop(self) -> None:
        self.process.stop()


async def load(url: str, key: str, sizes: Sizes, servers: Servers) -> Timeline:
    """The closed loop, with the fast server killed after `steady_seconds` for `outage_seconds`."""
    timeline = Timeline()
    payload = loadgen.encode(BODY)
    begin = time.perf_counter()
    stop_at = begin + sizes.steady_seconds + sizes.outage_seconds

    async def client() -> None:
        connection = loadgen.Connection(url, {"Authorization": f"Bearer {key}"})
        try:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                try:
                    status = await asyncio.wait_for(connection.status_of(payload), 180)
                except TimeoutError:
                    connection.close()
                    status = 0
                timeline.sent.append(started - begin)
                timeline.latencies.append(time.perf_counter() - started)
                timeline.statuses.append(status)
        finally:
            connection.close()

    async def outage() -> None:
        await asyncio.sleep(sizes.steady_seconds)
        await asyncio.to_thread(servers.kill, "fast")
        await asyncio.sleep(sizes.outage_seconds)
        await asyncio.to_thread(servers.start, "fast")

    await asyncio.gather(*(client() for _ in range(sizes.clients)), outage())
    return timeline


def summary(system: str, timeline: Timeline, shares: dict[str, int], sizes: Sizes) -> dict[str, Any]:
    def phase(first: float, last: float) -> dict[str, Any]:
        picked = [(lat, st) for sent, lat, st in zip(timeline.sent, timeline.latencies, timeline.statuses, strict=True)
                  if first <= sent < last]  # fmt: skip
        ok = sorted(lat for lat, st in picked if st == 200)
        return {
            "requests": len(picked),
            "ok": len(ok),
            "failed": len(picked) - len(ok),
            "throughput": round(len(ok) / (last - first), 1),
            "p50_ms": round(statistics.median(ok) * 1000, 1) if ok else None,
            "p99_ms": round(ok[min(len(ok) - 1, int(len(ok) * 0.99))] * 1000, 1) if ok else None,
        }

    total = max(1, shares["fast"] + shares["slow"])
    end = sizes.steady_seconds + sizes.outage_seconds
    return {
        "system": system,
        "share_fast": round(shares["fast"] / total, 3),
        "share_slow": round(shares["slow"] / total, 3),
        "steady": phase(0, sizes.steady_seconds),
        "outage": phase(sizes.steady_seconds, end),
        "all": phase(0, end),
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| system | share fast / slow | steady: jobs/s, p50, p99 ms | outage: jobs/s, p50, p99 ms | failed |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        steady, outage, whole = row["steady"], row["outage"], row["all"]
        lines.append(
            f"| {row['system']} | {row['share_fast']:.1%} / {row['share_slow']:.1%} | {steady['throughput']}, "
            f"{steady['p50_ms']}, {steady['p99_ms']} | {outage['throughput']}, {outage['p50_ms']}, {outage['p99_ms']}"
            f" | {whole['failed']} of {whole['requests']} |"
        )
    return "\n".join(lines)


def conversations(count: int) -> list[bytes]:
    """`count` chat bodies: one system prompt shared by all, a history of each's own."""
    system = {"role": "system", "content": "You answer questions about message queues. " * 46}
    bodies = []
    for n in range(count):
        history = [system, {"role": "user", "content": f"Tell me about topic {n}."},
                   {"role": "assistant", "content": f"Topic {n} is about queues."}]  # fmt: skip
        bodies.append(loadgen.encode({**BODY, "messages": [*history, {"role": "user", "content": "And then?"}]}))
    return bodies


async def turns(url: str, bodies: list[bytes], clients: int, seconds: float) -> Timeline:
    """A closed loop over `bodies`, each client taking the next conversation in turn."""
    timeline = Timeline()
    begin = time.perf_counter()
    stop_at = begin + seconds
    taken = 0

    async def client() -> None:
        nonlocal taken
        connection = loadgen.Connection(url, {"Authorization": "Bearer none"})
        try:
            while time.perf_counter() < stop_at:
                body = bodies[taken % len(bodies)]
                taken += 1
                started = time.perf_counter()
                status = await connection.status_of(body)
                timeline.sent.append(started - begin)
                timeline.latencies.append(time.perf_counter() - started)
                timeline.statuses.append(status)
        finally:
            connection.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return timeline


def affinity(processes: Processes, servers: Servers) -> list[dict[str, Any]]:
    """Prefix affinity on and off, with many conversations and with one hot one."""
    for name in ("fast", "slow"):  # here two equal servers, despite their names
        servers.start(name, latency=0.2, cached=0.05, cache_size=40)
    rows = []
    for label, bodies, on, clients in [
        ("64 conversations, affinity on", conversations(64), True, 8),
        ("64 conversations, affinity off", conversations(64), False, 8),
        ("one hot conversation, 16 clients for 8 slots a server", conversations(1), True, 16),
    ]:
        system = Gateway(processes, servers, affinity=on)
        try:
            servers.reset()
            timeline = asyncio.run(turns(system.url, bodies, clients, 20))
            counts = servers.reset()
        finally:
            system.stop()
        ok = sorted(lat for lat, st in zip(timeline.latencies, timeline.statuses, strict=True) if st == 200)
        answered = max(1, counts["fast"] + counts["slow"])
        row = {
            "system": label,
            "requests": len(timeline.statuses),
            "failed": len(timeline.statuses) - len(ok),
            "hit_rate": round((counts["fast hits"] + counts["slow hits"]) / answered, 3),
            "throughput": round(len(ok) / 20, 1),
            "mean_ms": round(statistics.fmean(ok) * 1000, 1),
            "p50_ms": round(statistics.median(ok) * 1000, 1),
            "p99_ms": round(ok[min(len(ok) - 1, int(len(ok) * 0.99))] * 1000, 1),
            "shares": [round(counts["fast"] / answered, 3), round(counts["slow"] / answered, 3)],
        }
        rows.append(row)
        print(f"bench.servers: {json.dumps(row)}", flush=True)
    return rows


def affinity_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| run | prefix-cache hits | jobs/s | mean, p50, p99 ms | shares of the two servers | failed |",
             "|" + "---|" * 6]  # fmt: skip
    for row in rows:
        lines.append(
            f"| {row['system']} | {row['hit_rate']:.1%} | {row['throughput']} | {row['mean_ms']}, {row['p50_ms']},"
            f" {row['p99_ms']} |"
            f" {row['shares'][0]:.1%} / {row['shares'][1]:.1%} | {row['failed']} of {row['requests']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--litellm", help="LiteLLM's `litellm` command (its proxy); without it, this gateway alone")
    parser.add_argument("--quick", action="store_true", help="15 s steady and 5 s of outage")
    parser.add_argument("--affinity", action="store_true", help="prefix affinity on and off, instead")
    args = parser.parse_args()
    sizes = Sizes(steady_seconds=15, outage_seconds=5) if args.quick else Sizes()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = RESULTS / f"servers-{stamp}-logs"
    logs.mkdir()
    processes = Processes(logs)
    servers = Servers(processes)
    if args.affinity:
        try:
            rows = affinity(processes, servers)
        finally:
            servers.stop()
            processes.stop_all()
        (RESULTS / f"servers-affinity-{stamp}.json").write_text(json.dumps({"rows": rows}, indent=2))
        print(affinity_table(rows))
        return
    rows = []
    systems: list[tuple[str, Any]] = [("gateway", lambda: Gateway(processes, servers))]
    if args.litellm:
        for strategy in ("least-busy", "simple-shuffle"):
            systems.append((f"litellm {strategy}", lambda s=strategy: LiteLLM(processes, servers, args.litellm, s)))
    try:
        for name, make in systems:
            for server in ("fast", "slow"):
                if server not in servers.running:
                    servers.start(server)
            system = make()
            try:
                servers.reset()
                timeline = asyncio.run(load(system.url, system.key, sizes, servers))
                shares = servers.reset()
            finally:
                system.stop()
            row = summary(name, timeline, shares, sizes)
            rows.append(row)
            print(f"bench.servers: {json.dumps(row)}", flush=True)
    finally:
        servers.stop()
        processes.stop_all()
    report = {"machine": {"cpus": os.cpu_count()}, "sizes": sizes.__dict__, "rows": rows}
    (RESULTS / f"servers-{stamp}.json").write_text(json.dumps(report, indent=2))
    text = table(rows)
    (RESULTS / f"servers-{stamp}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
