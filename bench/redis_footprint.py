"""What a job leaves in Redis: keys and bytes per job by kind, and the TTL each key has.

    python -m bench.redis_footprint              # 200 jobs of each kind, about a minute
    python -m bench.redis_footprint --jobs 50    # quicker
    python -m bench.redis_footprint --base HEAD~3   # the same, then again on a git worktree of HEAD~3

For each kind of job (a plain /generate, an OpenAI chat, a streamed chat, a background
response, an embedding) a gateway of its own (API, one worker, RabbitMQ, this machine's
Redis, its own REDIS_PREFIX) runs `--jobs` of it, each answered and, when streamed, read
to its end. Once the gateway is quiet, the prefix is SCANned and each key's
`MEMORY USAGE` summed, grouped by the kind of key (shared/contract/keys.py), less what
the prefix held before the first job (the worker's capacity report), divided by the
jobs. TTLs are the least and most a key of that kind is left with (-1: none).
"Day-bytes/job" weighs each key's bytes by how long it stays, up to a day
(bytes x min(TTL, 86400) / 86400; no TTL: a day): what a job adds to Redis at a steady
rate, so that at R jobs a second Redis holds R x 86400 x day-bytes. Writes
bench/results/redis-<time>.json and .md (git ignores the folder).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
KINDS = ("generate", "chat", "stream", "background", "embeddings")
SYSTEM = "You are a helpful assistant. Answer in one short sentence, in plain words."
QUESTION = "What is the weather usually like in Paris in the spring, and what should I pack?"
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
DAY = 86_400
SETTLE_SECONDS = 2.0  # for what a job does after its answer (a stream's readers let go, the end kept)


@dataclass
class KeyKind:
    """The keys of one kind left by a run: how many, their bytes, their TTLs."""

    keys: int = 0
    bytes: int = 0
    ttls: list[int] = field(default_factory=list)


def key_kind(name: str, prefix: str) -> str:
    """`job:abc` -> `job`; the result's `celery-task-meta-abc` -> `result`; a tenant's or
    a day's part (`usage:2026-12-07`) is dropped, so each kind is one row."""
    rest = name[len(prefix) :]
    if rest.startswith("celery-task-meta-"):
        return "result"
    head = rest.split(":", 1)[0]
    return re.sub(r"\d+$", "", head) or rest


def scan(client: redis.Redis, prefix: str) -> dict[str, KeyKind]:
    """Every key under `prefix`, by kind."""
    kinds: dict[str, KeyKind] = {}
    for raw in client.scan_iter(match=f"{prefix}*", count=1000):
        name = raw.decode()
        size = client.memory_usage(name, samples=0)
        if size is None:  # gone between the scan and the look
            continue
        kind = kinds.setdefault(key_kind(name, prefix), KeyKind())
        kind.keys += 1
        kind.bytes += size
        kind.ttls.append(client.ttl(name))
    return kinds


async def run_jobs(base: str, kind: str, jobs: int, concurrency: int) -> int:
    """Send `jobs` of `kind` to the gateway at `base`, `concurrency` at a time; how many
    were answered."""
    answered = 0
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:

        async def generate(n: int) -> bool:
            body = {"content": f"{QUESTION} ({n})", "meta": {"tokens_limit": 64, "model": "fake-model"}}
            return (await client.post("/generate", json=body)).status_code == 200

        async def chat(n: int) -> bool:
            body = {"model": "fake-model", "messages": [*MESSAGES[:1], {"role": "user", "content": f"{QUESTION} {n}"}]}
            return (await client.post("/v1/chat/completions", json=body)).status_code == 200

        async def stream(n: int) -> bool:
            body = {
                "model": "fake-model",
                "messages": [*MESSAGES[:1], {"role": "user", "content": f"{QUESTION} {n}"}],
                "stream": True,
            }
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                text = (await response.aread()).decode()
            return response.status_code == 200 and "data: [DONE]" in text

        async def background(n: int) -> bool:
            body = {"model": "fake-model", "instructions": SYSTEM, "input": f"{QUESTION} {n}", "background": True}
            created = await client.post("/v1/responses", json=body)
            if created.status_code != 200:
                return False
            for _ in range(600):
                got = (await client.get(f"/v1/responses/{created.json()['id']}")).json()
                if got["status"] in ("completed", "failed", "cancelled", "incomplete"):
                    return got["status"] == "completed"
                await asyncio.sleep(0.05)
            return False

        async def embeddings(n: int) -> bool:
            body = {"model": "fake-model", "input": f"{QUESTION} {n}", "encoding_format": "float"}
            return (await client.post("/v1/embeddings", json=body)).status_code == 200

        send: Callable[[int], Awaitable[bool]] = locals()[kind]
        numbers = iter(range(jobs))

        async def loop() -> None:
            nonlocal answered
            for n in numbers:
                ok = await send(n)
                answered += ok

        await asyncio.gather(*(loop() for _ in range(concurrency)))
    return answered


def measure(kind: str, jobs: int, concurrency: int, model_url: str, log_dir: Path) -> dict[str, Any]:
    """One gateway of its own runs `jobs` of `kind`; what they left in Redis, per job."""
    from testing.fake_model_server import free_port
    from testing.processes import Processes, config_from_env, remove_traces

    run = uuid.uuid4().hex[:8]
    env = {
        "ENV_FILE": "",
        "QUEUE_NAME": f"bench-{run}",
        "REDIS_PREFIX": f"bench-{run}",
        "RABBIT_MQ_HOST": "127.0.0.1",
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": "6379",
        "INNER_LLM_URL": model_url,
        "WAIT_TIMEOUT": "120",
        "FILE_STORE_URL": str(log_dir / f"files-{run}"),
    }
    prefix = f"bench-{run}:"
    client = redis.Redis(host="127.0.0.1", port=6379)
    processes = Processes(log_dir)
    try:
        processes.worker(env, name=f"worker-{kind}")
        port = free_port()
        processes.api(env, port)
        before = scan(client, prefix)
        answered = asyncio.run(run_jobs(f"http://127.0.0.1:{port}", kind, jobs, concurrency))
        time.sleep(SETTLE_SECONDS)
        after = scan(client, prefix)
    finally:
        processes.stop_all()
        remove_traces(config_from_env(env))
    rows = {}
    for name, left in sorted(after.items()):
        was = before.get(name, KeyKind())
        keys, size = left.keys - was.keys, left.bytes - was.bytes
        if keys == 0 and abs(size) < jobs:  # untouched by the jobs (a worker's report)
            continue
        kept = min(DAY, max(left.ttls)) if max(left.ttls) >= 0 else DAY
        rows[name] = {
            "keys_per_job": round(keys / jobs, 2),
            "bytes_per_job": round(size / jobs, 1),
            "day_bytes_per_job": round(size / jobs * kept / DAY, 1),
            "ttl_min": min(left.ttls),
            "ttl_max": max(left.ttls),
        }
    return {
        "kind": kind,
        "jobs": jobs,
        "answered": answered,
        "keys_per_job": round(sum(r["keys_per_job"] for r in rows.values()), 2),
        "bytes_per_job": round(sum(r["bytes_per_job"] for r in rows.values()), 1),
        "day_bytes_per_job": round(sum(r["day_bytes_per_job"] for r in rows.values()), 1),
        "by_key": rows,
    }


def ttl_text(low: int, high: int) -> str:
    def one(seconds: int) -> str:
        if seconds < 0:
            return "none"
        return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds} s"

    return one(low) if one(low) == one(high) else f"{one(low)} to {one(high)}"


def markdown(results: list[dict[str, Any]]) -> str:
    """The totals by kind of job, then each kind of key."""
    lines = ["| job | answered | keys/job | bytes/job | day-bytes/job |", "|---|---|---|---|---|"]
    lines += [f"| {r['kind']} | {r['answered']}/{r['jobs']} | {r['keys_per_job']} | {r['bytes_per_job']:.0f} |"
              f" {r['day_bytes_per_job']:.0f} |" for r in results]  # fmt: skip
    lines += ["", "| job | key | keys/job | bytes/job | TTL left |", "|---|---|---|---|---|"]
    for r in results:
        for name, k in r["by_key"].items():
            ttl = ttl_text(k["ttl_min"], k["ttl_max"])
            lines.append(f"| {r['kind']} | {name} | {k['keys_per_job']} | {k['bytes_per_job']:.0f} | {ttl} |")
    return "\n".join(lines)


def measure_all(kinds: list[str], jobs: int, concurrency: int) -> list[dict[str, Any]]:
    """Every kind, on one fake model server."""
    from bench.run import BIN
    from testing.fake_model_server import free_port
    from testing.processes import Processes, wait_for_http

    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = RESULTS / f"redis-{stamp}-logs"
    logs.mkdir(parents=True)
    model = Processes(logs)
    port = free_port()
    args = [str(BIN / "python"), "-m", "testing.fake_model_server", "--port", str(port)]
    wait_for_http(model.spawn("model", args, {}), f"http://127.0.0.1:{port}/v1/models")
    try:
        results = []
        for kind in kinds:
            results.append(measure(kind, jobs, concurrency, f"http://127.0.0.1:{port}", logs))
            print(f"bench.redis_footprint: {kind}: {results[-1]['keys_per_job']} keys, "
                  f"{results[-1]['bytes_per_job']:.0f} bytes per job", flush=True)  # fmt: skip
    finally:
        model.stop_all()
    return results


def on_base(revision: str, args: list[str]) -> list[dict[str, Any]]:
    """The same measure on a git worktree of `revision` (this tree's bench, its code)."""
    with tempfile.TemporaryDirectory(prefix="bench-base-") as scratch:
        base = Path(scratch) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), revision], cwd=ROOT, check=True)
        try:
            (base / "bench" / "redis_footprint.py").write_bytes(Path(__file__).read_bytes())
            out = Path(scratch) / "out.json"
            command = [sys.executable, "-m", "bench.redis_footprint", *args, "--json", str(out)]
            subprocess.run(command, cwd=base, check=True)
            return list(json.loads(out.read_text()))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200, help="jobs of each kind (default 200)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset of " + ", ".join(KINDS))
    parser.add_argument("--base", help="also measure this git revision (in a worktree), first")
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)  # where a base's run writes its rows
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    if unknown := set(kinds) - set(KINDS):
        parser.error(f"unknown kind: {', '.join(sorted(unknown))}")
    common = ["--jobs", str(args.jobs), "--concurrency", str(args.concurrency), "--kinds", ",".join(kinds)]
    base = on_base(args.base, common) if args.base else None
    results = measure_all(kinds, args.jobs, args.concurrency)
    if args.json:
        args.json.write_text(json.dumps(results))
        return
    text = markdown(results)
    if base is not None:
        text = f"## {args.base}\n\n{markdown(base)}\n\n## this tree\n\n{text}\n\n{compared(base, results)}"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"redis-{stamp}.json").write_text(json.dumps({"base": base, "this tree": results}, indent=1))
    (RESULTS / f"redis-{stamp}.md").write_text(text + "\n")
    print(text)


def compared(base: list[dict[str, Any]], this: list[dict[str, Any]]) -> str:
    """Keys and bytes per job by kind, the base's against this tree's."""
    lines = ["| job | keys/job | bytes/job | day-bytes/job | day-bytes |", "|---|---|---|---|---|"]
    before = {r["kind"]: r for r in base}
    for r in this:
        b = before.get(r["kind"])
        if b is None:
            continue
        ratio = r["day_bytes_per_job"] / b["day_bytes_per_job"] if b["day_bytes_per_job"] else float("nan")
        lines.append(f"| {r['kind']} | {b['keys_per_job']} → {r['keys_per_job']} | "
                     f"{b['bytes_per_job']:.0f} → {r['bytes_per_job']:.0f} | "
                     f"{b['day_bytes_per_job']:.0f} → {r['day_bytes_per_job']:.0f} | {ratio:.2f} x |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
