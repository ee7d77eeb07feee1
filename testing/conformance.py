"""The Open Responses compliance suite (tests/conformance/openresponses, see its NOTICE),
run with bun against a running gateway; its JSON report read back."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "tests" / "conformance" / "openresponses"
BUN = SUITE / "node_modules" / ".bin" / "bun"
# bun and zod, at the versions package.json and package-lock.json pin, into the suite's
# own node_modules (ignored by git); .ci/run does it.
INSTALL = "npm ci --prefix tests/conformance/openresponses --no-audit --no-fund"


def missing() -> str | None:
    """Why the suite cannot run here (no npm, or bun and zod not installed), or None."""
    if BUN.exists() and (SUITE / "node_modules" / "zod" / "package.json").exists():
        return None
    if shutil.which("npm") is None:
        return f"the Open Responses suite needs bun and zod from npm: install node and npm, then `{INSTALL}`"
    return f"the Open Responses suite needs bun and zod: run `{INSTALL}`"


@dataclass
class Outcome:
    """One test of the suite: its id, name, status and what it found wrong."""

    id: str
    name: str
    status: str
    errors: list[str]


def run_suite(
    base_url: str, api_key: str, model: str, timeout: float = 300, only: list[str] | None = None
) -> tuple[dict[str, Any], list[Outcome]]:
    """The suite run against `base_url` (…/v1): its summary and each test's outcome;
    `only` the tests of those ids."""
    chosen = ["--filter", ",".join(only)] if only else []
    done = subprocess.run(
        [str(BUN), "run", "bin/compliance-test.ts", "--base-url", base_url, "--api-key", api_key,
         "--model", model, "--json", *chosen],
        cwd=SUITE, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(
            f"the suite wrote no JSON report (exit {done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        ) from None
    outcomes = [Outcome(r["id"], r["name"], r["status"], r.get("errors") or []) for r in report["results"]]
    return report["summary"], outcomes
