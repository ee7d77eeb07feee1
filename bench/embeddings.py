"""Embeddings through the queue, coalesced or not, against the model server called
directly one input at a time.

    python -m bench.embeddings            # about 5 minutes
    python -m bench.embeddings --quick    # 2,000 requests each, about a minute

The fake model server (testing/fake_model_server.py) costs what a GPU's embedding
call costs: a fixed part per call (5 ms) and a part per input (0.1 ms), one call at a
time. 20,000 one-sentence inputs are sent as single-input requests at concurrency 64:

- **direct**: to the model server itself, one input a call (what a client without a
  batching layer does);
- **gateway, coalesced**: API, RabbitMQ, one worker, Redis, EMBED_COALESCE_WAIT_MS=1
  (the default): the worker joins the jobs arriving together into one call;
- **gateway, one call a job**: the same with EMBED_COALESCE_WAIT_MS=0.

Each row gives the CPU each process spent per job (/proc: the model server, and the
gateway's API, worker, RabbitMQ and Redis), what bounds the gateway on a small machine.
Then the latency a single client sees (concurrency 1, 300 requests) with coalescing on
and off: what the wait costs a job alone. Writes bench/results/embeddings-<time>.json
and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from bench import loadgen
from bench.run import BIN, RESULTS, cpu_seconds, service_pid
from testing.fake_model_server import free_port
from testing.processes import Processes, config_from_env, remove_traces, wait_for_http

FIXED, PER_INPUT = 0.005, 0.0001  # seconds a call costs, and each input of it
BODY = {
    "model": "fake-model",
    "input": "A single sentence about the weather in Paris today.",
    "encoding_format": "float",
}


@dataclass
class Sizes:
    requests: int = 20_000
    clients: int = 64
    alone: int = 300


def gateway(processes: Processes, model: str, wait_ms: str) -> tuple[str, list[Any], dict[str, str]]:
    """The gateway's URL, its processes (worker, API) and their environment."""
    run = uuid.uuid4().hex[:8]
    env = {
        "ENV_FILE": "", "QUEUE_NAME": f"bench-{run}", "REDIS_PREFIX": f"bench-{run}",
        "RABBIT_MQ_HOST": "127.0.0.1", "REDIS_HOST": "127.0.0.1", "REDIS_PORT": "6379",
        "INNER_LLM_URL": model, "WAIT_TIMEOUT": "120", "WORKER_CONCURRENCY": "64",
        "EMBED_COALESCE_WAIT_MS": wait_ms, "FILE_STORE_URL": str(processes.log_dir / f"files-{run}"),
    }  # fmt: skip
    port = free_port()
    started = [processes.worker(env, name=f"worker-{wait_ms}"), processes.api(env, port)]
    return f"http://127.0.0.1:{port}/v1/embeddings", started, env


def stats(model: str) -> dict[str, int]:
    return httpx.delete(f"{model}/stats", timeout=10).json()


def row(name: str, outcome: loadgen.Outcome, calls: dict[str, int], cpu: dict[str, float]) -> dict[str, Any]:
    ok = sorted(latency for latency, status in zip(outcome.latencies, outcome.statuses, strict=True) if status == 200)
    return {
        "system": name,
        "requests": len(outcome.statuses),
        "failed": len(outcome.statuses) - len(ok),
        "throughput": round(len(ok) / outcome.seconds, 1),
        "p50_ms": round(statistics.median(ok) * 1000, 2) if ok else None,
        "p99_ms": round(ok[int(len(ok) * 0.99) - 1] * 1000, 2) if ok else None,
        "calls": calls["embedding_calls"],
        "inputs_per_call": round(calls["embedded_inputs"] / max(1, calls["embedding_calls"]), 1),
        "cpu_ms_per_job": {name: round(seconds * 1000 / max(1, len(ok)), 3) for name, seconds in cpu.items()},
    }


def measure(
    url: str, model: str, clients: int, requests: int, pids: dict[str, int] | None = None
) -> tuple[loadgen.Outcome, dict, dict[str, float]]:
    """The outcome of `requests` at concurrency `clients`, the model server's calls, and
    the CPU seconds each process of `pids` spent meanwhile."""
    stats(model)
    before = {name: cpu_seconds(pid) for name, pid in (pids or {}).items()}
    outcome = asyncio.run(loadgen.closed_loop(url, BODY, clients, requests))
    cpu = {name: cpu_seconds(pid) - before[name] for name, pid in (pids or {}).items()}
    return outcome, stats(model), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 requests each")
    parser.add_argument("--fixed-ms", type=float, default=FIXED * 1000, help="what a model-server call costs")
    parser.add_argument("--per-input-ms", type=float, default=PER_INPUT * 1000, help="and each input of it")
    args = parser.parse_args()
    fixed, per_input = args.fixed_ms / 1000, args.per_input_ms / 1000
    sizes = Sizes(requests=2_000, alone=100) if args.quick else Sizes()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = RESULTS / f"embeddings-{stamp}-logs"
    logs.mkdir()
    processes = Processes(logs)
    port = free_port()
    model = f"http://127.0.0.1:{port}"
    args_ = [str(BIN / "python"), "-m", "testing.fake_model_server", "--port", str(port),
             "--embed-fixed", str(fixed), "--embed-per-input", str(per_input)]  # fmt: skip
    server = processes.spawn("model", args_, {})
    wait_for_http(server, f"{model}/v1/models")
    pids = {"model": server.popen.pid}
    rows, alone = [], {}
    try:
        outcome, calls, cpu = measure(f"{model}/v1/embeddings", model, sizes.clients, sizes.requests, pids)
        rows.append(row("direct, one input a call", outcome, calls, cpu))
        print(f"bench.embeddings: {json.dumps(rows[-1])}", flush=True)
        for name, wait_ms in (("gateway, coalesced (1 ms)", "1"), ("gateway, one call a job", "0")):
            url, started, env = gateway(processes, model, wait_ms)
            worker, api = (process.popen.pid for process in started)
            services = {"rabbitmq": service_pid("beam.smp"), "redis": service_pid("redis-server")}
            try:
                measure(url, model, sizes.clients, 500)  # warm: connections, pools
                outcome, calls, cpu = measure(
                    url, model, sizes.clients, sizes.requests, {**pids, "api": api, "worker": worker, **services}
                )
                rows.append(row(name, outcome, calls, cpu))
                print(f"bench.embeddings: {json.dumps(rows[-1])}", flush=True)
                single, _, _ = measure(url, model, 1, sizes.alone)
                alone[wait_ms] = round(statistics.median(single.latencies) * 1000, 2)
            finally:
                for process in started:
                    process.stop()
                remove_traces(config_from_env(env))
    finally:
        processes.stop_all()
    direct = rows[0]["throughput"]
    summary = {
        "coalesced_vs_direct": round(rows[1]["throughput"] / direct, 2),
        "one_call_a_job_vs_direct": round(rows[2]["throughput"] / direct, 2),
        "p50_alone_ms": {"coalesced": alone.get("1"), "one call a job": alone.get("0")},
        "p50_alone_added_ms": round(alone["1"] - alone["0"], 2),
    }
    report = {"machine": {"cpus": os.cpu_count()}, "sizes": sizes.__dict__, "cost": {"fixed": fixed,
              "per_input": per_input}, "rows": rows, "summary": summary}  # fmt: skip
    (RESULTS / f"embeddings-{stamp}.json").write_text(json.dumps(report, indent=2))
    lines = [
        "| system | jobs/s | p50 ms | p99 ms | failed | model-server calls | inputs a call | CPU ms a job |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['system']} | {r['throughput']} | {r['p50_ms']} | {r['p99_ms']} | {r['failed']} | {r['calls']} |"
              f" {r['inputs_per_call']} | {cpu_cell(r['cpu_ms_per_job'])} |" for r in rows]  # fmt: skip
    lines.append("")
    lines.append(f"Coalesced: {summary['coalesced_vs_direct']} x direct; one call a job:"
                 f" {summary['one_call_a_job_vs_direct']} x. At concurrency 1, p50 {alone.get('1')} ms coalesced,"
                 f" {alone.get('0')} ms one call a job ({summary['p50_alone_added_ms']:+} ms).")  # fmt: skip
    text = "\n".join(lines)
    (RESULTS / f"embeddings-{stamp}.md").write_text(text + "\n")
    print(text)


def cpu_cell(cpu: dict[str, float]) -> str:
    """The CPU a job cost, in all and by process."""
    return f"{sum(cpu.values()):.2f} (" + ", ".join(f"{name} {ms:.2f}" for name, ms in cpu.items()) + ")"


if __name__ == "__main__":
    main()
