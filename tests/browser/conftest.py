"""The console in a real Chromium: Playwright driving the system's browser
(/usr/bin/chromium, Debian's `chromium`; `.ci/run` installs it; no browser is downloaded),
against a gateway of API, worker and fake model servers with two tenants and an admin.

Every request a page makes is recorded; each test's page asks nothing outside the
gateway. With CONSOLE_SCREENSHOTS=1, the tests save the views they show to
docs/console/*.png (docs/console.md shows them)."""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.contract.keys import USAGE_MINUTE_SECONDS, usage_day, usage_minute, usage_prefix
from testing.fake_model_server import Failure, FakeModelServer
from testing.openai_sdk import chat_line, upload, wait_until_finished
from tests.conftest import Stack, _stack_factory

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"

TENANTS = """
tenants:
  - name: alpha
    weight: 2
    keys: ["alpha-key"]
    quotas: {requests_per_minute: 6000, tokens_per_day: 5000000, jobs_in_flight: 200}
  - name: beta
    keys: ["beta-key", "beta-key-2"]
    quotas: {max_priority: 9}
  - name: ops
    admin: true
    keys: ["ops-key"]
"""
KEYS = {"alpha": "alpha-key", "beta": "beta-key", "ops": "ops-key"}
# The organization's admin API key (ADMIN_API_KEYS): /v1/organization/*, /scaling and /metrics only.
ADMIN_API_KEY = "sk-admin-console-test"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Console:
    """The gateway the console is tested on, and what was put through it."""

    stack: Stack
    fake: FakeModelServer
    second: FakeModelServer  # the large model's other server
    jobs: dict[str, str] = field(default_factory=dict)  # tenant -> a job of its own
    batch_id: str = ""
    dead_job: str = ""  # the dead letter's job_id, as GET /dead_letters names it

    @property
    def url(self) -> str:
        return self.stack.url

    def get(self, path: str, tenant: str) -> httpx.Response:
        answer = httpx.get(f"{self.url}{path}", headers=auth(KEYS[tenant]), timeout=30)
        answer.raise_for_status()
        return answer


@pytest.fixture(scope="module")
def console(
    fake_server: FakeModelServer, broker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Console]:
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: the console reads the same endpoints on either broker")
    _need_chromium()
    tmp = tmp_path_factory.mktemp("console")
    second = FakeModelServer().start()
    make, cleanup = _stack_factory(tmp, fake_server, broker_env)
    keys_file = tmp / "tenants.yaml"
    keys_file.write_text(TENANTS)
    models = {
        "models": [
            {"name": "small", "url": fake_server.url, "served_name": "fake-model"},
            {"name": "large", "served_name": "fake-model",
             "servers": [{"url": fake_server.url, "name": "gpu-a", "slots": 8},
                         {"url": second.url, "name": "gpu-b", "slots": 4}]},
        ],
        "default": "small",
    }  # fmt: skip
    fake_server.reset()
    try:
        # Four worker slots: the Live view's test fills them, and more jobs wait.
        stack = make(concurrency=4, API_KEYS_FILE=str(keys_file), MODELS=json.dumps(models), LLM_MAX_RETRIES="1",
                     BATCH_POLL_SECONDS="0.2", METRICS_TOKEN="scrape-token", ADMIN_API_KEYS=ADMIN_API_KEY)  # fmt: skip
        made = Console(stack, fake_server, second)
        _put_traffic_through(made)
        _seed_history(made)
        yield made
    finally:
        cleanup()
        second.stop()
        fake_server.reset()


def _need_chromium() -> None:
    if CHROMIUM.exists():
        return
    why = "no Chromium at /usr/bin/chromium (Debian's `chromium`; .ci/run installs it)"
    if os.environ.get("REQUIRE_CHROMIUM"):
        pytest.fail(f"{why}, and REQUIRE_CHROMIUM is set")
    pytest.skip(why)


def _put_traffic_through(console: Console) -> None:
    """Jobs of both tenants on both models, a failed job (a dead letter), and a batch with
    a line that failed (its error file)."""
    url = console.url
    for tenant, model, content in (
        ("alpha", "small", "hello there"),
        ("alpha", "large", "a longer question"),
        ("beta", "small", "b"),
        ("beta", "large", "b again"),
        ("alpha", "small", "c"),
    ):
        job_id = f"{tenant}-{model}-{len(console.jobs)}"
        answer = httpx.post(f"{url}/generate", headers=auth(KEYS[tenant]), timeout=30,
                            json={"job_id": job_id, "content": content, "meta": {"model": model}})  # fmt: skip
        assert answer.status_code == 200, answer.text
        console.jobs.setdefault(tenant, job_id)
    console.fake.broken = 500
    try:
        doomed = {"job_id": "alpha-doomed", "content": "no luck", "meta": {"model": "small"}}
        failed = httpx.post(f"{url}/generate", headers=auth("alpha-key"), json=doomed, timeout=60)
        assert failed.status_code >= 500
    finally:
        console.fake.broken = None
    console.dead_job = "alpha~alpha-doomed"
    deadline = time.monotonic() + 30
    while not httpx.get(f"{url}/dead_letters", headers=auth("ops-key"), timeout=30).json()["data"]:
        assert time.monotonic() < deadline, "the failed job was not dead-lettered"
        time.sleep(0.2)

    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="alpha-key", max_retries=0, timeout=30)
    lines = [chat_line(f"line-{n}", f"question {n}") for n in range(4)]
    for line in lines:
        line["body"]["model"] = "small"
    # One line refused by the model server as the caller's error: it ends in the error file.
    console.fake.failures = [Failure(400, {"error": {"message": "bad request", "type": "BadRequestError"}})]
    batch = client.batches.create(input_file_id=upload(client, lines), endpoint="/v1/chat/completions",
                                  completion_window="24h")  # fmt: skip
    done = wait_until_finished(client, batch.id)
    assert done.status == "completed" and done.error_file_id, done
    console.batch_id = batch.id
    console.fake.failures = []


def _seed_history(console: Console) -> None:
    """An hour and a month of usage before the test's own, written into the hashes the
    workers count into (`Keys.usage_of_minute`, `Keys.usage`), so the charts have more
    than the test's few minutes to draw: synthetic figures, the same for every run."""
    config = console.stack.config
    import redis

    store = redis.Redis.from_url(config.redis_url)
    rng = random.Random(40)
    now = time.time()
    pipe = store.pipeline(transaction=False)

    def count(key: str, tenant: str, model: str, jobs: int, failed: int, ttl: int) -> None:
        prefix = usage_prefix(tenant, model)
        prompt, completion = jobs * rng.randint(30, 60), jobs * rng.randint(80, 200)
        for name, value in (("jobs", jobs), ("failed", failed), ("prompt_tokens", prompt),
                            ("completion_tokens", completion)):  # fmt: skip
            if value:
                pipe.hincrby(key, prefix + name, value)
        pipe.expire(key, ttl)

    pairs = (("alpha", "small", 6), ("alpha", "large", 3), ("beta", "small", 4), ("beta", "large", 1))
    for back in range(3, 59):  # the last few minutes are the test's own
        minute = usage_minute(now - 60 * back)
        wave = 1 + 0.8 * (1 - abs(30 - back) / 30)
        for tenant, model, scale in pairs:
            jobs = max(0, int(rng.gauss(scale * wave, scale / 3)))
            count(
                config.keys.usage_of_minute(minute), tenant, model, jobs, int(rng.random() < 0.08), USAGE_MINUTE_SECONDS
            )
    for back in range(1, 30):
        day = usage_day(now - 86_400 * back)
        weekday = 0.35 if time.gmtime(now - 86_400 * back).tm_wday >= 5 else 1.0
        for tenant, model, scale in pairs:
            jobs = max(0, int(rng.gauss(scale * 900 * weekday, scale * 90)))
            count(config.keys.usage(day), tenant, model, jobs, rng.randint(0, scale * 4), 40 * 86_400)
    pipe.execute()
    store.close()


# Module-scoped, not session-scoped: Playwright's sync API runs an event loop on the test
# process's thread while it is started, and every later test of that process calling
# asyncio.run() would fail ("cannot be called from a running event loop").
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


@dataclass
class Page:
    """A tab on the console, every request it made recorded."""

    page: Any
    base: str
    requests: list[str] = field(default_factory=list)

    def open(self, fragment: str = "") -> Page:
        self.page.goto(f"{self.base}/console{fragment}")
        self.page.wait_for_selector("body[data-ready='true']")
        return self

    def sign_in(self, key: str) -> Page:
        self.page.fill("#signin-key", key)
        self.page.press("#signin-key", "Enter")
        self.page.wait_for_selector("#who:not([hidden])")
        return self

    def go(self, view: str) -> Page:
        self.page.click(f"#nav a[data-view='{view}']")
        self.page.wait_for_selector(f"#view-{view}:not([hidden])")
        return self

    def api_paths(self) -> list[str]:
        """The paths of what the page asked the API (its own files aside)."""
        paths = [url.removeprefix(self.base) for url in self.requests]
        return [path for path in paths if not path.startswith("/console")]

    def screenshot(self, name: str) -> None:
        if os.environ.get("CONSOLE_SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
def open_page(browser: Any, console: Console) -> Iterator[Callable[..., Page]]:
    """A new tab (its own session storage) of the given size and colour scheme; when the
    test ends, every request each tab made is checked to have gone to the gateway alone."""
    opened: list[tuple[Any, Page]] = []

    def open_one(
        width: int = 1280, height: int = 860, scheme: str = "light", clock: bool = False, clipboard: bool = False
    ) -> Page:
        context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=scheme,
                                      accept_downloads=True)  # fmt: skip
        if clipboard:  # the page may write to the clipboard, and the test read it
            context.grant_permissions(["clipboard-read", "clipboard-write"], origin=console.url)
        if clock:  # the page's timers run when the test says (context.clock)
            context.clock.install()
        page = context.new_page()
        tab = Page(page, console.url)
        page.on("request", lambda request: tab.requests.append(request.url))
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        tab.errors = errors  # type: ignore[attr-defined]
        opened.append((context, tab))
        return tab

    yield open_one
    for context, _ in opened:
        context.close()
    for _, tab in opened:
        outside = [url for url in tab.requests if not _same_origin(url, console.url)]
        assert outside == [], f"the page asked outside the gateway: {outside}"
        # Refusals the test asked for are logged by the browser as failed loads; nothing else.
        unexpected = [e for e in tab.errors if "the server responded with a status of 40" not in e]  # type: ignore[attr-defined]
        assert unexpected == [], unexpected


def _same_origin(url: str, base: str) -> bool:
    # A file saved from memory has a blob: address of the page's own origin.
    return url.removeprefix("blob:").startswith(f"{base}/")
