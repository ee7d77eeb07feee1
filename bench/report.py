"""The benchmark's report: Markdown tables with pass/fail lines for the targets, and a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SYSTEMS = ("rabbitmq", "valkey")  # the targets' (the traced path's cost is reported beside rabbitmq's)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _by(rows: list[dict[str, Any]], scenario: str) -> dict[str, dict[str, Any]]:
    return {row["path"]: row for row in rows if row["scenario"] == scenario}


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}" if base else "-"


def against_litellm(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """(a) on /v1/chat/completions: what each of this gateway's paths adds to the direct
    path's p50 and p99, what LiteLLM's proxy adds, and the ratios (gateway / LiteLLM),
    by the gateway path's row; none without the direct and litellm rows."""
    a = _by(rows, "a")
    if "direct" not in a or "litellm" not in a:
        return {}
    base, theirs = a["direct"], a["litellm"]
    compared = {}
    for path, row in a.items():
        if path in ("direct", "litellm") or row.get("endpoint") != "/v1/chat/completions":
            continue
        figures = {}
        for q in ("p50", "p99"):
            mine, litellm = row[f"{q}_ms"] - base[f"{q}_ms"], theirs[f"{q}_ms"] - base[f"{q}_ms"]
            figures |= {
                f"added_{q}_ms": round(mine, 2),
                f"litellm_added_{q}_ms": round(litellm, 2),
                f"{q}_ratio": round(mine / litellm, 2) if litellm > 0 else float("nan"),
            }
        compared[path] = figures
    return compared


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Tables per scenario, then one PASS/FAIL line per target and path."""
    a, b, c, d, e = (_by(rows, s) for s in "abcde")
    out = [f"Benchmark of {meta['date']} on {meta['machine']}{' (quick run)' if meta['quick'] else ''}", ""]
    direct_a = a.get("direct", {})
    out += [
        "(a) latency at concurrency 1, 0 s model",
        "",
        "| path | endpoint | p50 ms | p99 ms | added p50 ms | added p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for path, row in a.items():
        added = [row[k] - direct_a.get(k, 0) for k in ("p50_ms", "p99_ms")]
        out.append(
            f"| {path} | {row.get('endpoint', '-')} | {row['p50_ms']} | {row['p99_ms']} | {added[0]:.2f} "
            f"| {added[1]:.2f} |"
        )
    for path, x in against_litellm(rows).items():
        out += [
            "",
            f"(a) against LiteLLM's proxy, both on /v1/chat/completions: added p50 {x['added_p50_ms']:.2f} ms"
            f" ({path}) / {x['litellm_added_p50_ms']:.2f} ms (litellm) = {x['p50_ratio']}; added p99"
            f" {x['added_p99_ms']:.2f} / {x['litellm_added_p99_ms']:.2f} ms = {x['p99_ratio']}",
        ]
    direct_b = b.get("direct", {}).get("throughput", 0)
    out += [
        "",
        "(b) throughput at concurrency 64, 0 s model; CPU per job of each process",
        "",
        "| path | jobs/s | ratio to direct | p50 ms | CPU ms/job, all | CPU ms/job by process |",
        "|---|---|---|---|---|---|",
    ]
    for path, row in b.items():
        cpu = row.get("cpu_ms_per_job", {})
        parts = ", ".join(f"{name} {ms}" for name, ms in cpu.items())
        out.append(
            f"| {path} | {row['throughput']} | {_ratio(row['throughput'], direct_b)} | {row['p50_ms']} "
            f"| {sum(cpu.values()):.2f} | {parts} |"
        )
    out += [
        "",
        "(c) capacity: every client sends one request at once, 2 s model",
        "",
        "| path | answered | p50 ms | p99 ms | model held at once | worker slots | API peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for path, row in c.items():
        out.append(
            f"| {path} | {row['ok']}/{row['requests']} | {row['p50_ms']} | {row['p99_ms']} "
            f"| {row['model_peak_in_flight']} | {row.get('worker_slots', '-')} | {row.get('api_peak_rss_mb', '-')} |"
        )
    out += [
        "",
        "(d) scaling: 1 and 2 worker processes, 0.5 s model, concurrency 256",
        "",
        "| path | jobs/s, 1 worker | jobs/s, 2 workers | ratio |",
        "|---|---|---|---|",
    ]
    for path, row in d.items():
        out.append(f"| {path} | {row['throughput_1_worker']} | {row['throughput_2_workers']} | {row['scaling']} |")
    direct_e = e.get("direct", {})
    out += [
        "",
        "(e) time to first token, streamed, concurrency 1, 20 ms per token (the usual app does not stream)",
        "",
        "| path | p50 ms | p99 ms | added p50 ms |",
        "|---|---|---|---|",
    ]
    for path, row in e.items():
        out.append(f"| {path} | {row['p50_ms']} | {row['p99_ms']} | {row['p50_ms'] - direct_e.get('p50_ms', 0):.2f} |")
    f = _by(rows, "f")
    if f:
        out += [
            "",
            "(f) a batch on a 0 s model, and interactive requests (concurrency 4) beside it",
            "",
            "| path | batch lines | lines/s | interactive p50 ms, alone / beside | p99 ms, alone / beside |"
            " added p50 ms | added p99 ms |",
            "|---|---|---|---|---|---|---|",
        ]
        for path, row in f.items():
            out.append(
                f"| {path} | {row['batch_completed']}/{row['batch_lines']} {row['batch_status']} "
                f"| {row['batch_lines_per_s']} | {row['alone_p50_ms']} / {row['p50_ms']} "
                f"| {row['alone_p99_ms']} / {row['p99_ms']} | {row['p50_ms'] - row['alone_p50_ms']:.2f} "
                f"| {row['p99_ms'] - row['alone_p99_ms']:.2f} |"
            )
    g = _by(rows, "g")
    if g:
        out += [
            "",
            "(g) noisy neighbour, 0.2 s model, 16 worker slots: the quiet tenant (concurrency 4) alone, beside a"
            " flood (concurrency 256) with tenants' turns, and without (FAIR_SHARE=false); two flooding tenants of"
            " weights 3 and 1",
            "",
            "| path | quiet p50 ms: alone / beside / beside, no turns | quiet p99 ms: alone / beside / beside, no turns"
            " | p50 beside / alone | weight-3 tenant's share of jobs done (0.75) |",
            "|---|---|---|---|---|",
        ]
        for path, row in g.items():
            out.append(
                f"| {path} | {row['alone_p50_ms']} / {row['p50_ms']} / {row.get('unfair_p50_ms', '-')} "
                f"| {row['alone_p99_ms']} / {row['p99_ms']} / {row.get('unfair_p99_ms', '-')} "
                f"| {_ratio(row['p50_ms'], row['alone_p50_ms'])} "
                f"| {row['three_share']} ({row['three_ok']} and {row['one_ok']} jobs) |"
            )
    out.append("")
    if "traced" in b and "rabbitmq" in b:
        on, off = b["traced"], b["rabbitmq"]
        cpu_on, cpu_off = (sum(row["cpu_ms_per_job"].values()) for row in (on, off))
        out += [
            f"Tracing on (traced against rabbitmq, (b)): {cpu_on - cpu_off:+.2f} ms CPU per job"
            f" ({cpu_off:.2f} -> {cpu_on:.2f}), throughput {_ratio(on['throughput'], off['throughput'])}x",
            "",
        ]
    out += ["Targets", ""] + [f"- {line}" for line in targets(rows)]
    return "\n".join(out) + "\n"


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """One line per target and path of this system: PASS or FAIL, with the figure."""
    a, b, c, d, e, f, g = (_by(rows, s) for s in "abcdefg")
    lines = []

    def check(ok: bool, text: str) -> None:
        lines.append(f"{'PASS' if ok else 'FAIL'} {text}")

    for path in SYSTEMS:
        if path in a and "direct" in a:
            p50 = a[path]["p50_ms"] - a["direct"]["p50_ms"]
            p99 = a[path]["p99_ms"] - a["direct"]["p99_ms"]
            check(p50 <= 5, f"(a) {path}: added p50 {p50:.2f} ms (≤ 5)")
            check(p99 <= 20, f"(a) {path}: added p99 {p99:.2f} ms (≤ 20)")
        if path in b:
            check(b[path]["throughput"] >= 400, f"(b) {path}: {b[path]['throughput']} jobs/s (≥ 400)")
            cpu = sum(b[path]["cpu_ms_per_job"].values())
            check(cpu <= 4, f"(b) {path}: {cpu:.2f} ms CPU per job, all processes (≤ 4)")
        if path in c:
            row = c[path]
            check(row["ok"] == row["requests"], f"(c) {path}: {row['ok']} of {row['requests']} answered (all)")
            held = row["model_peak_in_flight"] / row["worker_slots"]
            check(held >= 0.9, f"(c) {path}: model held {held:.0%} of the worker slots at once (≥ 90%)")
            check(row["api_peak_rss_mb"] < 250, f"(c) {path}: API peak RSS {row['api_peak_rss_mb']} MB (< 250)")
        if path in e and "direct" in e:
            added = e[path]["p50_ms"] - e["direct"]["p50_ms"]
            check(added <= 10, f"(e) {path}: time to first token adds {added:.2f} ms at p50 (≤ 10)")
        if path in f:
            row = f[path]
            complete = row["batch_completed"] == row["batch_lines"] and row["batch_status"] == "completed"
            check(complete, f"(f) {path}: batch {row['batch_completed']} of {row['batch_lines']} lines completed (all)")
            check(row["batch_running_during_beside"], f"(f) {path}: interactive requests measured while the batch ran")
        if path in g:
            row = g[path]
            ratio = row["p50_ms"] / row["alone_p50_ms"] if row["alone_p50_ms"] else float("inf")
            check(ratio <= 1.5, f"(g) {path}: quiet tenant's p50 beside a flood {ratio:.2f}x alone (≤ 1.5)")
            share = row["three_share"]
            check(abs(share - 0.75) <= 0.075, f"(g) {path}: weight-3 tenant's share {share} (0.75 ± 10 %)")
        if path in d:
            check(d[path]["scaling"] >= 1.8, f"(d) {path}: 2 workers give {d[path]['scaling']}x of 1 (≥ 1.8)")
        if "usual" in b:
            comparisons = [
                ("a", "p50 latency", a, "p50_ms", False),
                ("b", "throughput", b, "throughput", True),
                ("c", "answered", c, "ok", True),
                ("d", "throughput with 2 workers", d, "throughput_2_workers", True),
            ]
            for name, what, table, key, higher in comparisons:
                if path in table and "usual" in table:
                    mine, theirs = table[path][key], table["usual"][key]
                    better = mine >= theirs if higher else mine <= theirs
                    check(better, f"({name}) {path} vs usual, {what}: {mine} vs {theirs} ({_ratio(mine, theirs)}x)")
    return lines


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Latency distribution per path (scenarios a and b) and throughput against concurrency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for axis, scenario, title in (
        (axes[0], "a", "(a) latency, concurrency 1"),
        (axes[1], "b", "(b) latency, concurrency 64"),
    ):
        for name, row in _by(rows, scenario).items():
            values = sorted(row["latencies_ms"])
            if values:
                axis.plot(values, [i / len(values) for i in range(len(values))], label=name)
        axis.set(title=title, xlabel="latency (ms, log)", ylabel="share of requests answered", xscale="log")
        if axis.get_legend_handles_labels()[0]:  # a run without this scenario leaves it empty
            axis.legend()
    sweep: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        if row["scenario"] == "sweep":
            sweep.setdefault(row["path"], []).append((row["clients"], row["throughput"]))
    for name, points in sweep.items():
        axes[2].plot(*zip(*sorted(points), strict=True), marker="o", label=name)
    axes[2].set(
        title="throughput against concurrency, 0 s model", xlabel="clients (log)", ylabel="answers/s", xscale="log"
    )
    if axes[2].get_legend_handles_labels()[0]:
        axes[2].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
