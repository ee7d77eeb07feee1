"""Compare two versions of the request path on one scenario, alternating runs of each.

    python -m bench.compare HEAD~1                 # scenario (b) on RabbitMQ, 3 runs of each
    python -m bench.compare main --runs 4 --paths rabbitmq,valkey --scenarios a,b
    python -m bench.compare HEAD --paths rabbitmq,litellm --scenarios a   # against LiteLLM's proxy

This machine's speed drifts by more than most changes are worth, so the two versions
run in turn (base, this tree, base, ...) and the table gives each run's figures:
compare the ranges, not single runs. The base is checked out in a temporary git
worktree and run with this tree's virtualenv. Uncommitted changes of this tree are
part of "this tree".
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.report import against_litellm

ROOT = Path(__file__).resolve().parent.parent


def run_bench(tree: Path, paths: str, scenarios: str) -> list[dict[str, Any]]:
    """One run of the benchmark in `tree`; its rows."""
    results = tree / "bench" / "results"
    before = set(results.glob("*.json")) if results.exists() else set()
    command = [sys.executable, "-m", "bench.run", "--paths", paths, "--scenarios", scenarios]
    subprocess.run(command, cwd=tree, check=True, stdout=subprocess.DEVNULL)
    (new,) = set(results.glob("*.json")) - before
    return list(json.loads(new.read_text())["rows"])


def figures(rows: list[dict[str, Any]]) -> dict[str, str]:
    """What each row says, in one cell per path and scenario."""
    cells = {}
    for row in rows:
        key = f"({row['scenario']}) {row['path']}"
        if row["scenario"] == "b":
            cpu = row.get("cpu_ms_per_job", {})
            by = " ".join(f"{name} {ms:.2f}" for name, ms in cpu.items())
            cells[key] = f"{row['throughput']} jobs/s, {sum(cpu.values()):.2f} ms CPU ({by})"
        elif row["scenario"] in ("a", "e"):
            cells[key] = f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms"
        elif row["scenario"] == "sweep":
            cells[f"{key} {row['clients']}"] = f"{row['throughput']} jobs/s"
        else:
            cells[key] = f"{row['ok']}/{row['requests']}, {row['throughput']} jobs/s"
    for path, x in against_litellm(rows).items():
        cells[f"(a) {path} / litellm, added"] = (
            f"p50 {x['added_p50_ms']} / {x['litellm_added_p50_ms']} ms = {x['p50_ratio']}, "
            f"p99 {x['added_p99_ms']} / {x['litellm_added_p99_ms']} ms = {x['p99_ratio']}"
        )
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", help="the git revision to compare this tree with")
    parser.add_argument("--runs", type=int, default=3, help="runs of each version (default 3)")
    parser.add_argument("--paths", default="rabbitmq")
    parser.add_argument("--scenarios", default="b")
    args = parser.parse_args()
    revision = subprocess.run(
        ["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    results: dict[str, list[dict[str, str]]] = {revision: [], "this tree": []}
    with tempfile.TemporaryDirectory(prefix="bench-base-") as scratch:
        base = Path(scratch) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), revision], cwd=ROOT, check=True)
        try:
            for run in range(args.runs):
                for name, tree in ((revision, base), ("this tree", ROOT)):
                    cells = figures(run_bench(tree, args.paths, args.scenarios))
                    results[name].append(cells)
                    print(f"run {run + 1}, {name}: " + "; ".join(f"{k}: {v}" for k, v in cells.items()), flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    print()
    print(f"| figure | {revision} | this tree |")
    print("|---|---|---|")
    for key in results["this tree"][0]:
        print(
            f"| {key} | "
            + " | ".join("<br>".join(cells.get(key, "-") for cells in results[name]) for name in results)
            + " |"
        )


if __name__ == "__main__":
    main()
