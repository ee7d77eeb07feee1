"""Where a job's CPU goes: bench (b)'s load on the RabbitMQ path, with its API and its
worker sampled by py-spy, and the kernel's count of context switches per job.

    python -m bench.profile                 # 15 s of load at concurrency 64; flame graphs
    python -m bench.profile --seconds 30 --rate 97

py-spy is not a dependency of the project: it is installed on demand into its own
virtualenv under ~/.cache/llm-api-bench (the version in PY_SPY). Samples are taken of
the thread holding the GIL (`--gil`), so a thread waiting for a socket or a lock does
not count: what is left is where the process spends the CPU it is given.

Writes bench/results/profile-<time>/: api.svg and worker.svg (flame graphs),
api.txt and worker.txt (collapsed stacks), and summary.md (the frames taking the
largest shares, CPU and context switches per job of each process).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench import loadgen
from bench.run import RESULTS, System, cpu_seconds, fake_model
from testing.processes import Processes

PY_SPY = "py-spy==0.4.3"
CACHE = Path.home() / ".cache" / "llm-api-bench" / PY_SPY.replace("==", "-")


def py_spy() -> Path:
    """The py-spy binary, installed into its own virtualenv the first time."""
    binary = CACHE / "bin" / "py-spy"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(CACHE)], check=True)
        subprocess.run([str(CACHE / "bin" / "pip"), "install", "--quiet", PY_SPY], check=True)
    return binary


def context_switches(pid: int) -> int:
    """Voluntary and involuntary context switches of every thread of `pid` so far."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            text = status.read_text()
        except OSError:  # a thread that ended between the listing and the read
            continue
        total += sum(int(n) for n in re.findall(r"ctxt_switches:\s+(\d+)", text))
    return total


@dataclass
class Share:
    """A frame's share of a process's samples: `inclusive` with what it calls, `own` alone."""

    frame: str
    inclusive: float
    own: float


FRAME_LINE = re.compile(r":\d+\)")
OWN_CODE = ("api/", "tasks/", "shared/")
TITLE = re.compile(r'(<text id="title"[^>]*>)[^<]*(<)')


def titled(svg: str, title: str) -> str:
    """The flame graph with `title` in place of py-spy's (its command line: this
    machine's paths)."""
    return TITLE.sub(lambda found: found.group(1) + title + found.group(2), svg, count=1)


def shares(collapsed: str, top: int = 25, within: tuple[str, ...] = OWN_CODE) -> list[Share]:
    """The `top` frames by inclusive share, from py-spy's collapsed stacks ("a;b;c 12" lines).
    A frame is counted once per stack, however deep it recurs; line numbers are dropped,
    so a function's lines count together. Only frames of files under `within` are listed."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [FRAME_LINE.sub(")", frame) for frame in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += samples
        own[frames[-1]] += samples
    if not total:
        return []
    ours = [(frame, n) for frame, n in inclusive.most_common() if frame.rpartition("(")[2].startswith(within)]
    return [Share(frame, n / total, own[frame] / total) for frame, n in ours[:top]]


def package(frame: str) -> str:
    """The package (or standard library module) of a frame, "fastapi" of
    "APIRouter.handle (fastapi/routing.py)"."""
    where = frame.rpartition("(")[2].rstrip(")")
    return where.split("/", 1)[0].removesuffix(".py") if where else frame


def by_package(collapsed: str) -> list[tuple[str, float]]:
    """Each package's share of the samples, by the frame the sample was taken in (its own time)."""
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        own[package(stack.rpartition(";")[2])] += int(count)
        total += int(count)
    return [(name, n / total) for name, n in own.most_common()] if total else []


def summary(
    rows: dict[str, dict[str, float]],
    found: dict[str, tuple[list[tuple[str, float]], list[Share]]],
    jobs: int,
    seconds: float,
) -> str:
    lines = [
        f"# Profile: bench (b) load, RabbitMQ path, {jobs} jobs in {seconds:.1f} s ({jobs / seconds:.1f} jobs/s)",
        "",
        "| process | CPU ms/job | context switches/job |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {row['cpu_ms']:.3f} | {row['switches']:.1f} |" for name, row in rows.items()]
    for name, (packages, frames) in found.items():
        lines += ["", f"## {name}: samples (GIL held) by the package they were taken in", ""]
        lines += ["| package | share |", "|---|---|"]
        lines += [f"| {pkg} | {share:.1%} |" for pkg, share in packages if share >= 0.005]
        lines += ["", f"## {name}: the project's own functions, with what they call", ""]
        lines += ["| inclusive | own | frame |", "|---|---|---|"]
        lines += [f"| {s.inclusive:.1%} | {s.own:.1%} | `{s.frame}` |" for s in frames]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15, help="how long the load and the sampling last")
    parser.add_argument("--rate", type=int, default=97, help="samples per second")
    parser.add_argument("--clients", type=int, default=64)
    args = parser.parse_args()
    spy = py_spy()
    out = RESULTS / f"profile-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True)
    (out / "logs").mkdir()
    processes = Processes(out / "logs")
    try:
        with fake_model(processes, 0.0) as model, ExitStack() as stack:
            system = stack.enter_context(System(processes, "rabbitmq", model))
            target = system.target
            asyncio.run(loadgen.closed_loop(target.url, target.body, 8, 200))  # warm up
            sampled = {"api": target.pids["api"], "worker": target.pids["worker"]}
            before = {name: (cpu_seconds(pid), context_switches(pid)) for name, pid in target.pids.items()}
            spies = []
            for name, pid in sampled.items():
                for kind, suffix in (("flamegraph", "svg"), ("raw", "txt")):
                    command = [str(spy), "record", "--gil", "--nonblocking", "-r", str(args.rate)]
                    command += ["-d", str(int(args.seconds)), "-f", kind, "-o", str(out / f"{name}.{suffix}")]
                    spies.append(subprocess.Popen([*command, "--pid", str(pid)], stdout=subprocess.DEVNULL))
            outcome = asyncio.run(loadgen.for_duration(target.url, target.body, args.clients, args.seconds))
            after = {name: (cpu_seconds(pid), context_switches(pid)) for name, pid in target.pids.items()}
            for spy_process in spies:
                spy_process.wait(60)
    finally:
        processes.stop_all()
    jobs = max(outcome.ok, 1)
    rows = {
        name: {
            "cpu_ms": (after[name][0] - before[name][0]) * 1000 / jobs,
            "switches": (after[name][1] - before[name][1]) / jobs,
        }
        for name in before
    }
    for name in sampled:
        svg = out / f"{name}.svg"
        if svg.exists():
            svg.write_text(
                titled(svg.read_text(), f"{name}: bench (b) load, {outcome.ok / outcome.seconds:.0f} jobs/s")
            )
    found = {}
    for name in sampled:
        if (out / f"{name}.txt").exists():
            collapsed = (out / f"{name}.txt").read_text()
            found[name] = (by_package(collapsed), shares(collapsed))
    text = summary(rows, found, outcome.ok, outcome.seconds)
    (out / "summary.md").write_text(text)
    print(text)
    print(f"flame graphs: {out}/api.svg, {out}/worker.svg")


if __name__ == "__main__":
    main()
