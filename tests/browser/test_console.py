"""The console, driven in a real Chromium: each view shows what the API answers the same
key for the same period; a tenant's key sees its own tenant only and reaches no admin's
view or action; without a key there is nothing but the sign-in; no page asks anything
outside the gateway (checked after every test, tests/browser/conftest.py)."""

from __future__ import annotations

import math
import re
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from testing.load import wait_until
from tests.browser.conftest import ADMIN_API_KEY, KEYS, Console, Page, auth

pytestmark = pytest.mark.integration

FIGURES = {
    "requests": lambda row: row["jobs"] + row["failed"],
    "tokens": lambda row: row["total_tokens"],
    "errors": lambda row: row["failed"],
}


def drawn(tab: Page, chart: str) -> dict[tuple[str, str], int]:
    """What a chart draws: each bar's figure, by its bucket and series."""
    bars = tab.page.eval_on_selector_all(
        f"svg[data-chart='{chart}'] rect[data-series]",
        "rects => rects.map(r => [r.parentNode.dataset.bucket, r.dataset.series, Number(r.dataset.value)])",
    )
    return {(bucket, series): value for bucket, series, value in bars}


def buckets(tab: Page, chart: str) -> list[str]:
    return tab.page.eval_on_selector_all(f"svg[data-chart='{chart}'] g.bucket", "gs => gs.map(g => g.dataset.bucket)")


def expected(rows: list[dict[str, Any]], per: str, group: str, figure: str) -> dict[tuple[str, str], int]:
    """The same figure, summed from the API's rows as the chart should."""
    sums: dict[tuple[str, str], int] = defaultdict(int)
    for row in rows:
        sums[(row["minute" if per == "minute" else "date"], row[group])] += FIGURES[figure](row)
    return {pair: value for pair, value in sums.items() if value}


def totals(tab: Page) -> dict[str, dict[str, int]]:
    rows = tab.page.eval_on_selector_all(
        "#overview-totals tbody tr[data-series]",
        "trs => trs.map(tr => [tr.dataset.series || 'All', Object.fromEntries("
        "[...tr.querySelectorAll('td')].map(td => [td.dataset.figure, Number(td.dataset.value)]))])",
    )
    return dict(rows)


def shown_overview(tab: Page, per: str, group: str) -> None:
    """Chose the period and grouping, and waited until the charts show them."""
    page = tab.page
    page.select_option("#overview-period", per)
    page.select_option("#overview-group", group)
    page.wait_for_selector(f"#view-overview[data-state='ready'][data-per='{per}'][data-group='{group}']")


def assert_overview_is_the_apis(tab: Page, console: Console, tenant: str, per: str, group: str) -> None:
    shown_overview(tab, per, group)
    view = tab.page.locator("#view-overview")
    start, end = view.get_attribute("data-start"), view.get_attribute("data-end")
    query = "per=minute" if per == "minute" else f"start={start}&end={end}"
    answer = console.get(f"/usage?{query}", tenant).json()
    if per == "minute" and (answer["start"], answer["end"]) != (start, end):
        # The minute turned between the page's question and this one: ask the page again.
        tab.page.click("#overview-refresh")
        tab.page.wait_for_selector(f"#view-overview[data-state='ready'][data-end='{answer['end']}']")
    rows = answer["data"]
    assert rows, "nothing to compare"
    for figure in FIGURES:
        shown = buckets(tab, figure)
        assert len(shown) == (60 if per == "minute" else 30) and shown[0] == answer["start"]
        assert shown[-1] == answer["end"]
        assert drawn(tab, figure) == expected(rows, per, group, figure), (figure, per, group)
    sums: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        for name in (row[group], "All"):
            sums[name]["requests"] += row["jobs"] + row["failed"]
            sums[name]["tokens"] += row["total_tokens"]
            sums[name]["prompt"] += row["prompt_tokens"]
            sums[name]["completion"] += row["completion_tokens"]
            sums[name]["errors"] += row["failed"]
    assert totals(tab) == {name: dict(figures) for name, figures in sums.items()}


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus's histogram_quantile, over cumulative buckets by upper bound."""
    ordered = sorted(buckets.items())
    count = ordered[-1][1] if ordered else 0
    if not count:
        return None
    rank, below, below_count = q * count, 0.0, 0.0
    for i, (le, cumulative) in enumerate(ordered):
        if cumulative >= rank:
            if math.isinf(le):
                return ordered[i - 1][0] if i else None
            return below + (le - below) * (rank - below_count) / (cumulative - below_count)
        below, below_count = le, cumulative
    return None


def latencies(metrics: str) -> dict[str, list[float | None]]:
    """Per model: its jobs, then p50, p95 and p99 of a job's time and of its wait in queue."""
    per_model: dict[str, dict[str, dict[float, float]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(float)))
    for family in text_string_to_metric_families(metrics):
        if family.name not in ("llm_api_job_seconds", "llm_api_queue_seconds"):
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                per_model[sample.labels["model"]][family.name][float(sample.labels["le"])] += sample.value
    shown = {}
    for model, families in per_model.items():
        job, wait = families["llm_api_job_seconds"], families["llm_api_queue_seconds"]
        shown[model] = [job.get(math.inf, 0.0)] + [
            histogram_quantile(q, b) for b in (job, wait) for q in (0.5, 0.95, 0.99)
        ]
    return shown


def stored(tab: Page) -> dict[str, Any]:
    return tab.page.evaluate(
        "() => ({session: {...sessionStorage}, local: {...localStorage}, cookie: document.cookie, url: location.href})"
    )


def test_without_a_key_there_is_nothing_but_the_sign_in(open_page: Callable[..., Page], console: Console) -> None:
    tab = open_page().open("#dead-letters")
    page = tab.page
    assert page.is_visible("#view-signin") and page.is_hidden("#nav") and page.is_hidden("#who")
    assert [s for s in page.eval_on_selector_all(".view", "vs => vs.filter(v => !v.hidden).map(v => v.id)")] == [
        "view-signin"
    ]
    assert tab.api_paths() == []  # the page and its files alone: no figure is asked for
    tab.screenshot("sign-in")
    page.fill("#signin-key", "not-a-key")
    page.press("#signin-key", "Enter")
    page.wait_for_selector("#signin-error:has-text('invalid API key')")
    assert tab.api_paths() == ["/tenants"] and stored(tab)["session"] == {}
    assert page.is_visible("#view-signin") and page.is_hidden("#nav")
    # The page and its files: served by the gateway, naming no other origin, loading no
    # inline script (its Content-Security-Policy allows this origin only).
    html = httpx.get(f"{console.url}/console", timeout=10)
    assert "default-src 'none'" in html.headers["content-security-policy"]
    assert "connect-src 'self'" in html.headers["content-security-policy"]
    for asset in [*re.findall(r'(?:src|href)="(/console/[^"]+)"', html.text), "/console"]:
        text = httpx.get(f"{console.url}{asset}", timeout=10).text
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), asset
    assert "<script>" not in html.text and " style=" not in html.text


def test_an_admin_sees_every_tenants_figures_as_the_api_answers_them(
    open_page: Callable[..., Page], console: Console
) -> None:
    tab = open_page().open().sign_in("ops-key")
    page = tab.page
    assert page.text_content("#who-name") == "ops" and page.is_visible("#who-admin")
    # The key is in this tab's session storage alone: no cookie, nothing in the address.
    kept = stored(tab)
    assert kept["session"] == {"llm-console-key": "ops-key"} and kept["local"] == {} and kept["cookie"] == ""
    assert "ops-key" not in kept["url"] and page.context.cookies() == []
    assert all("ops-key" not in url for url in tab.requests)
    for per, group in (("minute", "model"), ("minute", "tenant"), ("day", "tenant"), ("day", "model")):
        assert_overview_is_the_apis(tab, console, "ops", per, group)
    shown_overview(tab, "minute", "model")
    page.wait_for_selector("#latency[data-state='ready']")
    expected_latency = latencies(console.get("/metrics", "ops").text)
    rows = page.eval_on_selector_all(
        "#latency-table tbody tr[data-model]",
        "trs => trs.map(tr => [tr.dataset.model, [...tr.querySelectorAll('td')].map(td => td.dataset.value)])",
    )
    assert {model for model, _ in rows} == set(expected_latency) == {"small", "large"}
    for model, values in rows:
        for shown, wanted in zip(values, expected_latency[model], strict=True):
            assert (shown == "") == (wanted is None) and (wanted is None or abs(float(shown) - wanted) < 1e-5)
    tab.screenshot("overview")


def test_a_tenants_key_sees_its_own_tenant_and_no_admins_view_or_action(
    open_page: Callable[..., Page], console: Console
) -> None:
    tab = open_page().open().sign_in("alpha-key")
    page = tab.page
    assert page.text_content("#who-name") == "alpha" and page.is_hidden("#who-admin")
    # The admins' views are not offered.
    assert page.is_hidden("#nav a[data-view='live']") and page.is_hidden("#nav a[data-view='dead-letters']")
    for per, group in (("minute", "tenant"), ("day", "model")):
        assert_overview_is_the_apis(tab, console, "alpha", per, group)
    shown_overview(tab, "day", "tenant")
    assert {series for _, series in drawn(tab, "requests")} == {"alpha"}
    assert page.is_hidden("#latency") and "/metrics" not in tab.api_paths()
    # Asked for by address anyway, they show the API's refusal, and nothing of their figures.
    page.goto(f"{console.url}/console#live")
    page.wait_for_selector("#live-models .refused")
    assert "403" in page.text_content("#live-models") and page.query_selector("#live-models .card") is None
    page.goto(f"{console.url}/console#dead-letters")
    page.wait_for_selector("#view-dead-letters[data-state='refused']")
    assert "admin keys only" in page.text_content("#dead-table")
    assert page.query_selector("#dead-table button") is None and console.dead_job not in page.text_content("body")
    assert "/scaling?bands=true" in tab.api_paths() and "/dead_letters?limit=200" in tab.api_paths()
    # Another tenant's job is one it does not have; its own is shown.
    tab.go("jobs")
    assert page.is_hidden("#job-tenant")
    page.fill("#job-id", console.jobs["beta"])
    page.press("#job-id", "Enter")
    page.wait_for_selector("#job-result .refused")
    assert "404" in page.text_content("#job-result") and "no job" in page.text_content("#job-result")
    page.fill("#job-id", console.jobs["alpha"])
    page.press("#job-id", "Enter")
    page.wait_for_selector(f"dl.job[data-job='{console.jobs['alpha']}']")
    assert page.text_content("dl.job [data-field='tenant']") == "alpha"
    # Its own batches only; its own tenant only.
    tab.go("batches")
    page.wait_for_selector("#view-batches[data-state='ready']")
    assert page.eval_on_selector_all("tr[data-batch]", "trs => trs.map(tr => tr.dataset.batch)") == [console.batch_id]
    tab.go("projects")
    page.wait_for_selector("tr[data-project]")
    assert page.eval_on_selector_all("tr[data-project]", "trs => trs.map(tr => tr.dataset.project)") == ["alpha"]
    beta = open_page().open().sign_in("beta-key").go("batches")
    beta.page.wait_for_selector("#view-batches[data-state='ready']")
    assert beta.page.query_selector("tr[data-batch]") is None


def test_live_shows_each_models_signals_as_scaling_answers_them_and_refreshes_itself(
    open_page: Callable[..., Page], console: Console
) -> None:
    tab = open_page(clock=True).open().sign_in("ops-key").go("live")
    page = tab.page
    page.wait_for_selector("#live-models .card")
    scaling = console.get("/scaling?bands=true", "ops").json()["models"]
    assert page.eval_on_selector_all(".card", "cs => cs.map(c => c.dataset.model)") == sorted(scaling)
    for model, signals in scaling.items():
        for field in ("waiting", "running", "slots", "busy_slots", "workers", "demand"):
            if field == "slots":
                text = page.text_content(f".card[data-model='{model}'] [data-field='busy_slots']")
                assert text == f"{signals['busy_slots']} of {signals['slots']}"
                continue
            value = page.get_attribute(f".card[data-model='{model}'] [data-field='{field}']", "data-value")
            assert float(value) == signals[field], (model, field)
    servers = page.eval_on_selector_all(
        ".card[data-model='large'] li[data-server]",
        "ls => ls.map(l => [l.dataset.server, l.querySelector('[data-field=state]').textContent,"
        " Number(l.querySelector('[data-field=busy]').dataset.value)])",
    )
    assert servers == [[s["name"], s["state"], s["busy"]] for s in scaling["large"]["servers"]]
    assert page.query_selector(".card[data-model='small'] li[data-server]") is None  # one server: no pool
    # The page's clock is the test's: five seconds on, it asks again by itself.
    first = page.get_attribute("#view-live", "data-at")
    page.clock.pause_at(time.time() + 1)
    with page.expect_request(lambda request: request.url.endswith("/scaling?bands=true")):
        page.clock.run_for(5000)
    page.wait_for_selector(f"#view-live:not([data-at='{first}'])", state="attached")
    # Paused, it asks no more, however long it waits.
    page.click("#live-pause")
    assert page.get_attribute("#live-pause", "aria-pressed") == "true"
    asked = tab.api_paths().count("/scaling?bands=true")
    page.clock.run_for(60_000)
    page.evaluate("fetch('/health')")  # a request after the minute: any the page made is recorded by now
    assert tab.api_paths().count("/scaling?bands=true") == asked
    # Resumed while jobs run and more wait: it shows them running on the model's servers,
    # and those waiting by priority band.
    console.fake.latency = console.second.latency = 8.0
    sent = [("slow-0", None), ("slow-1", None), ("slow-2", None), ("slow-3", None)]  # the 4 worker slots'
    waiting = [("urgent-0", 9), ("urgent-1", 7), ("usual-0", 5), ("usual-1", None), ("batchy-0", 0)]
    try:
        for job_id, priority in sent:
            queue_job(console, job_id, priority)
        wait_until(lambda: console.get("/scaling", "ops").json()["models"]["large"]["running"] == 4, 20, "4 running")
        for job_id, priority in waiting:
            queue_job(console, job_id, priority)
        expected = {"high": 2, "normal": 2, "low": 1}
        assert console.get("/scaling?bands=true", "ops").json()["models"]["large"]["waiting_by_band"] == expected
        at = page.get_attribute("#view-live", "data-at")
        page.click("#live-pause")  # resumed: it asks at once
        running = ".card[data-model='large'] [data-field='running'][data-value='4']"
        deadline = time.monotonic() + 20
        while True:
            page.wait_for_selector(f"#view-live:not([data-at='{at}'])", state="attached")
            if page.query_selector(running) is not None:
                break
            assert time.monotonic() < deadline, "the running jobs were never shown"
            at = page.get_attribute("#view-live", "data-at")
            with page.expect_request(lambda request: request.url.endswith("/scaling?bands=true")):
                page.clock.run_for(5000)
        shown = page.eval_on_selector_all(
            ".card[data-model='large'] [data-band]", "dds => dds.map(dd => [dd.dataset.band, Number(dd.dataset.value)])"
        )
        assert dict(shown) == expected and [band for band, _ in shown] == ["high", "normal", "low"]
        assert page.get_attribute(".card[data-model='small'] [data-band='high']", "data-value") == "0"
        # Nothing waits for a server's slot (12 of them, for 4 worker slots), and the page says so.
        line = page.eval_on_selector_all(
            ".card[data-model='large'] [data-server-band]",
            "dds => dds.map(dd => [dd.dataset.serverBand, Number(dd.dataset.value)])",
        )
        assert line == [["high", 0], ["normal", 0], ["low", 0]]
        assert page.query_selector(".card[data-model='small'] [data-server-band]") is None
        tab.screenshot("live")
    finally:
        console.fake.latency = console.second.latency = 0.0
    for job_id, _ in sent + waiting:
        wait_until(lambda j=job_id: console.get(f"/jobs/{j}", "beta").json()["status"] == "succeeded", 40, job_id)


def queue_job(console: Console, job_id: str, priority: int | None) -> None:
    """A job of beta's for the large model, queued without waiting for it."""
    meta: dict[str, Any] = {"model": "large"} if priority is None else {"model": "large", "priority": priority}
    job = {"job_id": job_id, "content": "slow", "meta": meta}
    queued = httpx.post(f"{console.url}/generate?wait=0", headers=auth("beta-key"), json=job, timeout=30)
    assert queued.status_code == 202, queued.text


def test_a_job_looked_up_shows_what_its_status_says(open_page: Callable[..., Page], console: Console) -> None:
    job_id = "alpha-large-1"  # run on the model with two servers: served by one of them
    status = console.get(f"/jobs/{job_id}?tenant=alpha", "ops").json()
    tab = open_page().open(f"#jobs?id={job_id}&tenant=alpha").sign_in("ops-key")
    page = tab.page
    page.wait_for_selector(f"dl.job[data-job='{job_id}']")
    field = lambda name: page.text_content(f"dl.job [data-field='{name}']")  # noqa: E731
    for name in ("job_id", "tenant", "status", "accepted_at", "started_at", "finished_at"):
        assert field(name) == status[name], name
    result = status["result"]
    assert field("served_model") == result["served_model"] == "large"
    assert field("server") == result["server"] and result["server"] in ("gpu-a", "gpu-b")
    assert field("model") == result["model"]
    usage = result["usage"]
    assert field("usage") == f"{usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion"
    # Its times: between those its status gives.
    times = {
        name: datetime.fromisoformat(status[name]).timestamp() for name in ("accepted_at", "started_at", "finished_at")
    }
    shown = lambda name: float(page.get_attribute(f"dl.job [data-field='{name}']", "data-value") or "nan")  # noqa: E731
    assert abs(shown("queued_seconds") - (times["started_at"] - times["accepted_at"])) < 0.002
    assert abs(shown("run_seconds") - (times["finished_at"] - times["started_at"])) < 0.002
    assert abs(shown("total_seconds") - (times["finished_at"] - times["accepted_at"])) < 0.002
    tab.screenshot("jobs")
    # Its tenant sees which model served it, not which server (an address of the deployment's).
    own = console.get(f"/jobs/{job_id}", "alpha").json()["result"]
    assert own["served_model"] == "large" and "server" not in own
    mine = open_page().open(f"#jobs?id={job_id}").sign_in("alpha-key").page
    mine.wait_for_selector(f"dl.job[data-job='{job_id}'] [data-field='served_model']")
    assert mine.query_selector("dl.job [data-field='server']") is None


def test_batches_show_their_progress_and_their_error_file(
    open_page: Callable[..., Page], console: Console, tmp_path: Path
) -> None:
    batch = console.get(f"/v1/batches/{console.batch_id}", "alpha").json()
    tab = open_page().open().sign_in("alpha-key").go("batches")
    page = tab.page
    row = f"tr[data-batch='{console.batch_id}']"
    page.wait_for_selector(row)
    counts = page.locator(f"{row} [data-field='counts']")
    assert [int(counts.get_attribute(f"data-{n}") or -1) for n in ("completed", "failed", "total")] == [
        batch["request_counts"][n] for n in ("completed", "failed", "total")
    ]
    assert page.text_content(f"{row} [data-field='status']") == batch["status"] == "completed"
    assert page.get_attribute(f"{row} progress", "value") == "4" and page.get_attribute(f"{row} progress", "max") == "4"
    with page.expect_download() as downloading:
        page.click(f"{row} button[data-file='errors']")
    saved = Path(downloading.value.path()).read_bytes()
    content = httpx.get(f"{console.url}/v1/files/{batch['error_file_id']}/content", headers=auth("alpha-key"))
    assert saved == content.content and b"bad request" in saved
    tab.screenshot("batches")


def test_a_keys_file_admin_sees_the_keys_files_tenants_read_only(
    open_page: Callable[..., Page], console: Console
) -> None:
    tenants = console.get("/tenants", "ops").json()["data"]
    tab = open_page().open().sign_in("ops-key").go("projects")
    page = tab.page
    page.wait_for_selector("tr[data-project]")
    rows = page.eval_on_selector_all(
        "tr[data-project]",
        "trs => trs.map(tr => [tr.dataset.project, tr.querySelector('[data-field=keys]').textContent])",
    )
    assert rows == [[t["name"], str(t["keys"])] for t in tenants] == [["alpha", "1"], ["beta", "2"], ["ops", "1"]]
    # Nothing to create or revoke: a keys file admin is not the organization's (its admin API keys).
    assert page.is_hidden("#project-new") and page.query_selector("[data-manage]") is None
    assert page.is_hidden("#project") and "read-only" in page.text_content("#projects-source")
    assert httpx.get(f"{console.url}/v1/organization/projects", headers=auth("ops-key")).status_code == 403
    tab.screenshot("projects-keys-file")


def test_a_narrow_dark_window_fits_and_the_charts_read_by_keyboard(
    open_page: Callable[..., Page], console: Console
) -> None:
    tab = open_page(width=390, height=844, scheme="dark").open()
    page = tab.page
    focused = lambda: page.evaluate("document.activeElement.id || document.activeElement.textContent")  # noqa: E731
    # The key's field has the focus; Enter signs in; the view's heading has it then, and
    # Tab goes through the view's controls to its charts.
    assert focused() == "signin-key"
    page.keyboard.type("alpha-key")
    page.keyboard.press("Enter")
    page.wait_for_selector("#view-overview[data-state='ready']")
    assert focused() == "overview-title"
    stops = []
    for _ in range(4):
        page.keyboard.press("Tab")
        stops.append(page.evaluate("document.activeElement.id || document.activeElement.dataset.chart"))
    assert stops == ["overview-period", "overview-group", "overview-refresh", "requests"]
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(21, 23, 27)"  # the dark scheme
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    chart = "svg[data-chart='requests']"
    page.keyboard.press("End")
    last = page.eval_on_selector_all(f"{chart} g.bucket", "gs => gs[gs.length - 1].dataset")
    tip = page.text_content("#tip")
    assert page.is_visible("#tip") and f"{int(last['total']):,} requests" in tip
    page.keyboard.press("ArrowLeft")
    before = page.eval_on_selector_all(f"{chart} g.bucket", "gs => gs[gs.length - 2].dataset")
    assert f"{int(before['total']):,} requests" in page.text_content("#tip")
    assert page.eval_on_selector(f"{chart} g.bucket.active", "g => g.dataset.bucket") == before["bucket"]
    tab.screenshot("overview-narrow-dark")
    # Hovering a bar shows its figure too.
    busiest = page.eval_on_selector_all(
        f"{chart} g.bucket",
        "gs => gs.reduce((a, g) => Number(g.dataset.total) > Number(a.dataset.total) ? g : a).dataset",
    )
    page.hover(f"{chart} g.bucket[data-bucket='{busiest['bucket']}'] rect[data-series]")
    assert f"{int(busiest['total']):,} requests" in page.text_content("#tip")
    # From the top of the page (still signed in: the tab's session), the first stop is the
    # way past the header and the views' links.
    page.reload()
    page.wait_for_selector("#view-overview[data-state='ready']")
    page.keyboard.press("Tab")
    assert focused() == "Skip to content"
    page.keyboard.press("Enter")
    assert focused() == "main"


def test_a_dead_letter_is_replayed_only_once_the_admin_confirms(
    open_page: Callable[..., Page], console: Console
) -> None:
    tab = open_page().open().sign_in("ops-key").go("dead-letters")
    page = tab.page
    row = f"tr[data-job='{console.dead_job}']"
    page.wait_for_selector(row)
    assert page.text_content(f"{row} td:nth-of-type(1)") == "alpha"
    tab.screenshot("dead-letters")
    # Asked first; the safe choice has the focus; cancelled, nothing is sent.
    page.click(f"{row} button")
    page.wait_for_selector("#confirm[open]")
    assert page.evaluate("document.activeElement.id") == "confirm-cancel"
    assert console.dead_job in page.text_content("#confirm-text")
    tab.screenshot("dead-letters-confirm")
    page.keyboard.press("Escape")
    page.wait_for_selector("#confirm:not([open])", state="attached")
    page.click(f"{row} button")
    page.click("#confirm-cancel")
    assert not any(path.startswith("/dead_letters/replay") for path in tab.api_paths())
    listed = httpx.get(f"{console.url}/dead_letters", headers=auth("ops-key"), timeout=30).json()["data"]
    assert [entry["job_id"] for entry in listed] == [console.dead_job]
    # Confirmed: replayed, and the job answers.
    page.click(f"{row} button")
    page.click("#confirm-ok")
    page.wait_for_selector(f"#status:has-text('Replayed {console.dead_job}')")
    page.wait_for_selector("#view-dead-letters[data-state='ready'] td.empty")
    assert httpx.get(f"{console.url}/dead_letters", headers=auth("ops-key"), timeout=30).json()["data"] == []
    wait_until(
        lambda: console.get("/jobs/alpha-doomed", "alpha").json()["status"] == "succeeded", 30, "the replayed job"
    )
    assert KEYS["alpha"] not in page.content()


ORG = "/v1/organization/projects"


def chat(console: Console, key: str) -> httpx.Response:
    body = {"model": "small", "messages": [{"role": "user", "content": "hello"}]}
    return httpx.post(f"{console.url}/v1/chat/completions", headers=auth(key), json=body, timeout=30)


def organization(console: Console, method: str, path: str, **body: Any) -> httpx.Response:
    """The Administration API, asked with the admin API key."""
    return httpx.request(
        method, f"{console.url}{ORG}{path}", headers=auth(ADMIN_API_KEY), json=body or None, timeout=30
    )


def test_an_admin_api_key_makes_a_project_and_a_key_that_works_until_it_is_revoked(
    open_page: Callable[..., Page], console: Console
) -> None:
    tab = open_page(clipboard=True).open().sign_in(ADMIN_API_KEY)
    page = tab.page
    assert page.text_content("#who-name") == "organization" and page.text_content("#who-admin") == "admin API key"
    # Offered what its endpoints answer: the organization's projects and the operators' Live.
    offered = page.eval_on_selector_all("#nav li:not([hidden]) a", "as => as.map(a => a.dataset.view)")
    assert offered == ["live", "projects"]
    # The others' endpoints refuse it: asked for by address, the view shows the refusal.
    assert chat(console, ADMIN_API_KEY).status_code == 403
    page.goto(f"{console.url}/console#overview")
    page.wait_for_selector("#view-overview[data-state='refused']")
    assert "403" in page.text_content("#view-overview .refused")
    tab.go("projects")
    page.wait_for_selector("#view-projects[data-state='ready']")
    # The keys file's tenants beside the projects, read-only: nothing to manage in them.
    rows = page.eval_on_selector_all("tr[data-project]", "trs => trs.map(tr => tr.dataset.project)")
    listed = organization(console, "GET", "?limit=100").json()["data"]
    assert rows == [p["id"] for p in listed] and {"alpha", "beta", "ops"} <= set(rows)
    assert page.query_selector("tr[data-project='alpha'] [data-manage]") is None
    # A project, made in the console: shown with its keys (none yet).
    page.fill("#project-name", "Research")
    page.press("#project-name", "Enter")
    page.wait_for_selector("#project:not([hidden]) #keys-table td.empty")
    project_id = page.text_content("#project-id") or ""
    assert re.fullmatch(r"proj_[0-9a-f]{24}", project_id), project_id
    assert (
        organization(console, "GET", f"/{project_id}").json()["name"]
        == page.text_content("#project-title")
        == "Research"
    )
    assert page.text_content("#status") == f"Project Research made ({project_id})."
    assert page.evaluate("document.activeElement.id") == "project-title"
    page.keyboard.press("Tab")  # on to its first control: the new key's name
    assert page.evaluate("document.activeElement.id") == "key-name"
    # A key: its value shown once, with a copy button.
    page.fill("#key-name", "nightly-eval")
    page.press("#key-name", "Enter")
    page.wait_for_selector("#key-made:not([hidden])")
    value = page.text_content("#key-value") or ""
    assert value.startswith("sk-proj-")
    assert page.evaluate("document.activeElement.id") == "key-copy"
    page.click("#key-copy")
    page.wait_for_selector("#key-copied:has-text('Copied')")
    assert page.evaluate("navigator.clipboard.readText()") == value
    keys = organization(console, "GET", f"/{project_id}/api_keys").json()["data"]
    assert len(keys) == 1 and value.endswith(keys[0]["redacted_value"].split("...")[-1])
    row = f"#keys-table tr[data-key='{keys[0]['id']}']"
    page.wait_for_selector(row)
    assert page.text_content(f"{row} td:nth-of-type(1)") == keys[0]["redacted_value"]
    assert page.text_content(f"{row} td:nth-of-type(2)") == "nightly-eval"
    tab.screenshot("projects")
    # The key calls the model, as its project.
    answer = chat(console, value)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]
    # Shown once: the page, opened again, has it nowhere.
    page.reload()
    page.wait_for_selector(f"#view-projects[data-state='ready'] {row}")
    assert page.is_hidden("#key-made") and value not in page.content()
    # Revoking asks first, the safe choice focused; cancelled, the key still works.
    page.click(f"{row} button")
    page.wait_for_selector("#confirm[open]")
    assert page.evaluate("document.activeElement.id") == "confirm-cancel"
    assert keys[0]["redacted_value"] in page.text_content("#confirm-text")
    tab.screenshot("projects-revoke-confirm")
    page.click("#confirm-cancel")
    assert chat(console, value).status_code == 200
    assert len(organization(console, "GET", f"/{project_id}/api_keys").json()["data"]) == 1
    page.click(f"{row} button")
    page.click("#confirm-ok")
    page.wait_for_selector(f"#status:has-text('Key {keys[0]['redacted_value']} revoked')")
    page.wait_for_selector("#keys-table td.empty")
    assert organization(console, "GET", f"/{project_id}/api_keys").json()["data"] == []
    refused = chat(console, value)
    assert refused.status_code == 401, refused.text
    # Archived, after asking: gone from the list, and archived in the API.
    page.click("#project-archive")
    page.wait_for_selector("#confirm[open]")
    page.click("#confirm-ok")
    page.wait_for_selector("#status:has-text('Project Research archived')")
    page.wait_for_selector("#view-projects[data-state='ready']")
    assert page.query_selector(f"tr[data-project='{project_id}']") is None and page.is_hidden("#project")
    assert organization(console, "GET", f"/{project_id}").json()["archived_at"] is not None
    # Its Live view is the operators' (GET /scaling answers an admin API key).
    tab.go("live")
    page.wait_for_selector("#live-models .card")
    assert value not in page.content() and ADMIN_API_KEY not in page.content()


def test_a_project_key_sees_its_own_project_and_no_admin_action(
    open_page: Callable[..., Page], console: Console
) -> None:
    project = organization(console, "POST", "", name="Product").json()
    made = organization(console, "POST", f"/{project['id']}/service_accounts", name="app").json()
    key = made["api_key"]["value"]
    assert chat(console, key).status_code == 200
    tab = open_page().open().sign_in(key)
    page = tab.page
    assert page.text_content("#who-name") == project["id"] and page.is_hidden("#who-admin")
    offered = page.eval_on_selector_all("#nav li:not([hidden]) a", "as => as.map(a => a.dataset.view)")
    assert offered == ["overview", "jobs", "batches", "projects"]
    tab.go("projects")
    page.wait_for_selector("#view-projects[data-state='ready']")
    assert page.eval_on_selector_all("tr[data-project]", "trs => trs.map(tr => tr.dataset.project)") == [project["id"]]
    # No action offered, even asked for by address; and the API refuses them to this key.
    page.goto(f"{console.url}/console#projects?id={project['id']}")
    page.wait_for_selector("#view-projects[data-state='ready']")
    assert page.is_hidden("#project-new") and page.is_hidden("#project")
    assert page.locator("#view-projects button:visible").count() == 0
    for method, path in (("GET", ""), ("POST", f"/{project['id']}/service_accounts"),
                         ("DELETE", f"/{project['id']}/api_keys/{made['api_key']['id']}"),
                         ("POST", f"/{project['id']}/archive")):  # fmt: skip
        refused = httpx.request(method, f"{console.url}{ORG}{path}", headers=auth(key), json={"name": "x"}, timeout=30)
        assert refused.status_code == 403, (method, path, refused.text)
    assert "/v1/organization/projects" not in " ".join(tab.api_paths())
    assert chat(console, key).status_code == 200  # nothing was revoked


@pytest.mark.parametrize("form, path", [("rate-limits", "rate_limits"), ("model-permissions", "model_permissions"),
                                        ("spend-limit", "spend_limit")])  # fmt: skip
def test_a_projects_limits_are_set_in_its_form_as_the_api_then_reads_them(
    open_page: Callable[..., Page], console: Console, form: str, path: str
) -> None:
    project = organization(console, "POST", "", name=f"Limits {form}").json()
    tab = open_page().open(f"#projects?id={project['id']}").sign_in(ADMIN_API_KEY)
    page = tab.page
    page.wait_for_selector("#view-projects[data-state='ready'] #project:not([hidden])")
    # Served here, so offered (a gateway without the route hides the form: console.js).
    assert page.is_visible(f"#{form}")
    if form == "spend-limit":
        page.fill("#spend-amount", "125.50")
        page.click("#spend-limit button[type=submit]")
        page.wait_for_selector("#status:has-text('Budget saved')")
        saved = organization(console, "GET", f"/{project['id']}/spend_limit").json()
        assert (saved["threshold_amount"], saved["currency"], saved["interval"]) == (12550, "USD", "month")
        assert page.input_value("#spend-amount") == "125.50"
    elif form == "model-permissions":
        page.check("#model-permissions input[value=allow_list]")
        page.fill("#model-ids", "small")
        page.click("#model-permissions button[type=submit]")
        page.wait_for_selector("#status:has-text('Model access saved')")
        saved = organization(console, "GET", f"/{project['id']}/model_permissions").json()
        assert (saved["mode"], saved["model_ids"]) == ("allow_list", ["small"])
    else:
        page.wait_for_selector("#rate-limits-table tr[data-rate-limit]")
        first = page.get_attribute("#rate-limits-table tr[data-rate-limit]", "data-rate-limit")
        page.fill(f"tr[data-rate-limit='{first}'] input[name=max_requests_per_1_minute]", "42")
        page.click("#rate-limits button[type=submit]")
        page.wait_for_selector("#status:has-text('Rate limits saved')")
        limits = organization(console, "GET", f"/{project['id']}/rate_limits").json()["data"]
        assert next(rl for rl in limits if rl["id"] == first)["max_requests_per_1_minute"] == 42
    if form == "rate-limits":  # the three forms are on one page: one picture of it
        tab.screenshot("projects-limits")
