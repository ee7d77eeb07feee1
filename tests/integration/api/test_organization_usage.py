"""Usage and costs through the official ``openai`` SDK's admin client, strict validation
on, against a control plane in SQLite and in PostgreSQL: real requests with the keys of
two projects (and a keys file's tenant) run by a real worker against the fake model
server (which reports cached prompt tokens), then ``usage.completions``,
``usage.embeddings`` and ``costs`` with each bucket width, group and filter, a page at a
time: every figure the sum of the answers' own usage, every cost the registry's prices
times their tokens; the history kept when Redis loses its counts; who may ask; and the
worst queries a caller can send."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
import redis
from sqlalchemy import func, select

from shared.control.database import engine_for
from shared.control.models import UsageBucket
from shared.registry import Prices
from testing.control_databases import ControlDatabases
from testing.fake_model_server import FakeModelServer
from testing.openai_sdk import admin_client, chat_line, upload, wait_until_finished
from tests.conftest import Stack, _stack_factory

pytestmark = pytest.mark.integration

ADMIN_KEY = "sk-admin-usage-5e2b8c1d9f3a4e6b7c0d2f4a6b8c0e1d"
TENANT_KEY = "key-research-usage-1"
TENANTS = f"""
tenants:
  - name: research
    keys: ["{TENANT_KEY}"]
"""
PRICES = {
    "chat-a": Prices(input=2.0, cached_input=0.5, output=8.0),
    "chat-b": Prices(input=1.0, output=3.0),
    "embed-e": Prices(input=0.1),
}
CACHED = 3  # prompt tokens the fake model server says it had cached, of each chat


@dataclass(frozen=True)
class Answered:
    """One request's own usage, as its answer told it, and what it was of."""

    project: str
    key_id: str | None
    model: str
    kind: str  # completions | embeddings
    batch: bool
    input_tokens: int
    cached: int
    output_tokens: int

    @property
    def cost(self) -> int:  # nano-USD
        return PRICES[self.model].cost(self.input_tokens, self.output_tokens, self.cached)


@dataclass
class Traffic:
    stack: Stack
    database: str
    start: int
    end: int
    answers: list[Answered]
    keys: dict[str, str]  # name -> key id
    projects: dict[str, str]  # name -> project id
    project_keys: dict[str, str]  # name -> key value

    def of(self, kind: str, **where: Any) -> list[Answered]:
        return [a for a in self.answers if a.kind == kind and all(getattr(a, k) == v for k, v in where.items())]


@pytest.fixture(scope="module")
def traffic(
    fake_server: FakeModelServer,
    broker_env: dict[str, str],
    control_databases: ControlDatabases,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Traffic]:
    """A gateway with one worker and a control plane of its own, and the requests made
    through it: chat completions (streamed and not), a response, embeddings, a batch."""
    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: usage is counted the same whichever the broker")
    folder = tmp_path_factory.mktemp("usage")
    keys_file = folder / "tenants.yaml"
    keys_file.write_text(TENANTS)
    models = {
        "models": [
            {"name": name, "url": fake_server.url, "prices": {k: v for k, v in vars(p).items() if v is not None}}
            for name, p in PRICES.items()
        ],
        "default": "chat-a",
    }
    database = control_databases.fresh()
    make, cleanup = _stack_factory(folder, fake_server, broker_env)
    fake_server.reset()
    fake_server.cached_tokens = CACHED
    try:
        stack = make(
            workers=1, ADMIN_API_KEYS=ADMIN_KEY, API_KEYS_FILE=str(keys_file), CONTROL_DATABASE_URL=database,
            MODELS=json.dumps(models), USAGE_FLUSH_SECONDS="1",
        )  # fmt: skip
        yield run_traffic(stack, database)
    finally:
        fake_server.reset()
        cleanup()


def run_traffic(stack: Stack, database: str) -> Traffic:
    admin = admin_client(stack.url, ADMIN_KEY).admin.organization
    projects = {name: admin.projects.create(name=name).id for name in ("alpha", "beta")}
    keys: dict[str, str] = {}
    values: dict[str, str] = {}
    for name, project in (("a1", "alpha"), ("a2", "alpha"), ("b1", "beta")):
        made = admin.projects.service_accounts.create(projects[project], name=name)
        assert made.api_key is not None
        keys[name], values[name] = made.api_key.id, made.api_key.value
    start = int(time.time())
    answers: list[Answered] = []

    def chat(key: str, project: str, key_id: str | None, model: str, words: int, stream: bool = False) -> None:
        sdk = sdk_of(stack, key)
        messages = [{"role": "user", "content": " ".join(["word"] * words)}]
        if stream:
            chunks = list(sdk.chat.completions.create(model=model, messages=messages, stream=True,  # type: ignore[call-overload]
                                                       stream_options={"include_usage": True}))  # fmt: skip
            used = chunks[-1].usage
        else:
            used = sdk.chat.completions.create(model=model, messages=messages).usage  # type: ignore[arg-type]
        assert used is not None and used.prompt_tokens_details is not None
        cached = used.prompt_tokens_details.cached_tokens or 0
        assert cached == min(CACHED, used.prompt_tokens)  # the answer tells its cached tokens
        answers.append(Answered(project, key_id, model, "completions", False, used.prompt_tokens, cached,
                                used.completion_tokens))  # fmt: skip

    def respond(key: str, project: str, key_id: str, words: int) -> None:
        used = sdk_of(stack, key).responses.create(model="chat-a", input=" ".join(["word"] * words)).usage
        assert used is not None and used.input_tokens_details.cached_tokens == min(CACHED, used.input_tokens)
        answers.append(Answered(project, key_id, "chat-a", "completions", False, used.input_tokens,
                                used.input_tokens_details.cached_tokens, used.output_tokens))  # fmt: skip

    def embed(key: str, project: str, key_id: str | None, inputs: list[str]) -> None:
        used = sdk_of(stack, key).embeddings.create(model="embed-e", input=inputs, encoding_format="float").usage
        answers.append(Answered(project, key_id, "embed-e", "embeddings", False, used.prompt_tokens, 0, 0))

    alpha, beta = projects["alpha"], projects["beta"]
    for words in (2, 5, 9):
        chat(values["a1"], alpha, keys["a1"], "chat-a", words)
    chat(values["a1"], alpha, keys["a1"], "chat-b", 4, stream=True)
    chat(values["a2"], alpha, keys["a2"], "chat-a", 7)
    respond(values["a2"], alpha, keys["a2"], 5)  # /v1/responses: a completion too
    chat(values["b1"], beta, keys["b1"], "chat-a", 3)
    chat(values["b1"], beta, keys["b1"], "chat-b", 6)
    chat(TENANT_KEY, "research", None, "chat-a", 8)  # a keys file's tenant: its name is its project_id
    embed(values["a1"], alpha, keys["a1"], ["one two three", "four"])
    embed(values["b1"], beta, keys["b1"], ["five six"])
    # A batch of project beta's: its lines are counted as batch, to the key that made it.
    sdk = sdk_of(stack, values["b1"])
    file_id = upload(sdk, [chat_line(f"line-{n}", " ".join(["batch"] * (n + 2)), model="chat-a") for n in range(2)])
    batch = sdk.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    done = wait_until_finished(sdk, batch.id)
    assert done.status == "completed" and done.output_file_id
    for line in sdk.files.content(done.output_file_id).text.splitlines():
        used = json.loads(line)["response"]["body"]["usage"]
        cached = used.get("prompt_tokens_details", {}).get("cached_tokens", 0)
        answers.append(Answered(beta, keys["b1"], "chat-a", "completions", True, used["prompt_tokens"], cached,
                                used["completion_tokens"]))  # fmt: skip
    end = int(time.time()) + 1
    return Traffic(stack, database, start, end, answers, keys, projects, values)


def sdk_of(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=key, max_retries=0, timeout=60,
                         _strict_response_validation=True)  # fmt: skip


def org(traffic: Traffic, key: str = ADMIN_KEY) -> Any:
    return admin_client(traffic.stack.url, key).admin.organization


def pages(call: Callable[..., Any], **query: Any) -> list[Any]:
    """Every bucket of a report, a page at a time (following next_page)."""
    buckets: list[Any] = []
    page = call(**query)
    while True:
        assert page.object == "page" and all(bucket.object == "bucket" for bucket in page.data)
        buckets += page.data
        if not page.has_more:
            assert page.next_page is None
            return buckets
        page = call(**query, page=page.next_page)


def summed(buckets: list[Any], group: str | None, counts: tuple[str, ...]) -> dict[Any, tuple[int, ...]]:
    """The buckets' results added up by the value of `group` (None: all together)."""
    totals: dict[Any, list[int]] = {}
    for bucket in buckets:
        assert bucket.end_time - bucket.start_time in (60, 3600, 86_400)
        for result in bucket.results:
            key = getattr(result, group) if group else None
            total = totals.setdefault(key, [0] * len(counts))
            for index, name in enumerate(counts):
                total[index] += getattr(result, name)
    return {key: tuple(values) for key, values in totals.items()}


def expected(answers: list[Answered], group: str | None, counts: tuple[str, ...]) -> dict[Any, tuple[int, ...]]:
    names = {"project_id": "project", "model": "model", "api_key_id": "key_id", "batch": "batch"}
    totals: dict[Any, list[int]] = {}
    for answer in answers:
        key = getattr(answer, names[group]) if group else None
        total = totals.setdefault(key, [0] * len(counts))
        for index, name in enumerate(counts):
            field = {"input_cached_tokens": "cached"}.get(name, name)
            total[index] += 1 if name == "num_model_requests" else getattr(answer, field)
    return {key: tuple(values) for key, values in totals.items()}


COMPLETION_COUNTS = ("num_model_requests", "input_tokens", "input_cached_tokens", "output_tokens")
EMBEDDING_COUNTS = ("num_model_requests", "input_tokens")


@pytest.mark.parametrize("width", ["1m", "1h", "1d"])
def test_usage_by_each_width_and_group_is_the_sum_of_the_answers_usage(traffic: Traffic, width: str) -> None:
    usage = org(traffic).usage
    limit = {"1m": 7, "1h": 2, "1d": 1}[width]  # pages of a few buckets each
    span = {"start_time": traffic.start, "end_time": traffic.end, "bucket_width": width, "limit": limit}
    for group in (None, "project_id", "model", "api_key_id", "batch"):
        grouped = {"group_by": [group]} if group else {}
        found = summed(pages(usage.completions, **span, **grouped), group, COMPLETION_COUNTS)
        assert found == expected(traffic.of("completions"), group, COMPLETION_COUNTS), (width, group)
        if group != "batch":
            found = summed(pages(usage.embeddings, **span, **grouped), group, EMBEDDING_COUNTS)
            assert found == expected(traffic.of("embeddings"), group, EMBEDDING_COUNTS), (width, group)
    assert {a.project for a in traffic.answers} == {*traffic.projects.values(), "research"}


def test_usage_filters_choose_the_answers_they_name(traffic: Traffic) -> None:
    usage = org(traffic).usage
    span = {"start_time": traffic.start, "end_time": traffic.end, "bucket_width": "1h"}
    alpha, beta = traffic.projects["alpha"], traffic.projects["beta"]
    chosen = [
        ({"project_ids": [alpha]}, traffic.of("completions", project=alpha)),
        ({"project_ids": [beta, "research"]}, [a for a in traffic.of("completions") if a.project != alpha]),
        ({"models": ["chat-b"]}, traffic.of("completions", model="chat-b")),
        ({"api_key_ids": [traffic.keys["a2"]]}, traffic.of("completions", key_id=traffic.keys["a2"])),
        ({"batch": True}, traffic.of("completions", batch=True)),
        ({"batch": False, "project_ids": [beta]}, traffic.of("completions", batch=False, project=beta)),
        ({"models": ["no-such-model"]}, []),
    ]
    for query, answers in chosen:
        found = summed(pages(usage.completions, **span, **query), None, COMPLETION_COUNTS)
        assert found == expected(answers, None, COMPLETION_COUNTS), query
    found = summed(pages(usage.embeddings, **span, project_ids=[beta]), None, EMBEDDING_COUNTS)
    assert found == expected(traffic.of("embeddings", project=beta), None, EMBEDDING_COUNTS)


def test_costs_are_the_registrys_prices_times_the_answers_tokens(traffic: Traffic) -> None:
    costs = org(traffic).usage.costs
    span = {"start_time": traffic.start, "end_time": traffic.end}
    whole = pages(costs, **span)
    total = sum(r.amount.value for b in whole for r in b.results)
    assert all(r.amount.currency == "usd" for b in whole for r in b.results)
    assert total == pytest.approx(sum(a.cost for a in traffic.answers) / 1e9, abs=1e-12)
    by_project: dict[str, float] = {}
    for bucket in pages(costs, **span, group_by=["project_id"]):
        for result in bucket.results:
            by_project[result.project_id] = by_project.get(result.project_id, 0.0) + result.amount.value
    for project in {a.project for a in traffic.answers}:
        wanted = sum(a.cost for a in traffic.answers if a.project == project) / 1e9
        assert by_project[project] == pytest.approx(wanted, abs=1e-12)
    items: dict[str, tuple[float, float]] = {}
    for bucket in pages(costs, **span, group_by=["line_item"]):
        for result in bucket.results:
            value, quantity = items.get(result.line_item, (0.0, 0.0))
            items[result.line_item] = (value + result.amount.value, quantity + (result.quantity or 0))
            assert result.quantity_unit == "tokens"
    for model, prices in PRICES.items():
        answered = [a for a in traffic.answers if a.model == model]
        uncached = sum(a.input_tokens - a.cached for a in answered)
        assert items[f"{model}, input"] == pytest.approx((uncached * prices.input / 1e6, uncached))
        if model != "embed-e":
            cached = sum(a.cached for a in answered)
            cached_price = prices.input if prices.cached_input is None else prices.cached_input
            assert items[f"{model}, cached input"] == pytest.approx((cached * cached_price / 1e6, cached))
            output = sum(a.output_tokens for a in answered)
            assert items[f"{model}, output"] == pytest.approx((output * prices.output / 1e6, output))
    only = pages(costs, **span, project_ids=[traffic.projects["beta"]], line_items=["chat-a, output"])
    wanted = sum(
        a.output_tokens for a in traffic.answers if a.project == traffic.projects["beta"] and a.model == "chat-a"
    )
    assert sum(r.amount.value for b in only for r in b.results) == pytest.approx(wanted * 8.0 / 1e6)


def test_pages_of_minutes_follow_next_page_to_the_end(traffic: Traffic) -> None:
    usage = org(traffic).usage
    first_minute = traffic.start // 60 * 60
    first = usage.completions(start_time=traffic.start, end_time=traffic.end, bucket_width="1m", limit=1)
    assert [b.start_time for b in first.data] == [first_minute] and first.data[0].end_time == first_minute + 60
    every = pages(usage.completions, start_time=traffic.start, end_time=traffic.end, bucket_width="1m", limit=1)
    assert [b.start_time for b in every] == list(range(first_minute, traffic.end, 60))
    assert first.has_more == (len(every) > 1)


def test_the_history_outlives_redis_and_keys_show_their_last_use(traffic: Traffic) -> None:
    engine = engine_for(traffic.database)
    try:
        # Each finished minute is recorded within USAGE_FLUSH_SECONDS (1) and a few seconds of its end.
        deadline = time.monotonic() + 90
        recorded = 0
        while time.monotonic() < deadline:
            with engine.begin() as connection:
                total = select(func.coalesce(func.sum(UsageBucket.num_model_requests), 0)).where(
                    UsageBucket.width == "1m"
                )
                recorded = connection.execute(total).scalar_one()
            if recorded == len(traffic.answers):
                break
            time.sleep(1)
        assert recorded == len(traffic.answers)
    finally:
        engine.dispose()
    # Redis comes back empty: this stack's counts of minutes, and the cursor, gone.
    config = traffic.stack.config
    store = redis.Redis(host=config.redis_host, port=config.redis_port)
    try:
        lost = [*store.scan_iter(match=f"{config.key_prefix}usage-bucket*"), config.keys.usage_flushed]
        assert len(lost) > 1
        store.delete(*lost)
    finally:
        store.close()
    usage = org(traffic).usage
    for width in ("1m", "1h", "1d"):
        span = {"start_time": traffic.start, "end_time": traffic.end, "bucket_width": width, "limit": 31}
        for group in (None, "api_key_id"):
            grouped = {"group_by": [group]} if group else {}
            found = summed(pages(usage.completions, **span, **grouped), group, COMPLETION_COUNTS)
            assert found == expected(traffic.of("completions"), group, COMPLETION_COUNTS), (width, group)
    # A key's last use: the start of the last minute it was used in.
    admin = org(traffic)
    for name, project in (("a1", "alpha"), ("a2", "alpha"), ("b1", "beta")):
        key = admin.projects.api_keys.retrieve(traffic.keys[name], project_id=traffic.projects[project])
        assert key.last_used_at is not None and key.last_used_at % 60 == 0
        assert traffic.start // 60 * 60 <= key.last_used_at < traffic.end
    listed = {key.id: key.last_used_at for key in admin.projects.api_keys.list(traffic.projects["alpha"])}
    assert listed[traffic.keys["a1"]] is not None


def test_only_admin_keys_read_usage_and_costs(traffic: Traffic) -> None:
    for path in ("/usage/completions", "/usage/embeddings", "/costs"):
        url = f"{traffic.stack.url}/v1/organization{path}?start_time=0"
        assert httpx.get(url, timeout=10).status_code == 401  # no key
        for key in (traffic.project_keys["a1"], TENANT_KEY):  # a project's key, a keys file tenant's
            assert httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code == 403
    with pytest.raises(openai.PermissionDeniedError):
        org(traffic, traffic.project_keys["a1"]).usage.costs(start_time=0)


@pytest.mark.parametrize(
    ("path", "query", "param"),
    [
        ("/usage/completions", "start_time=200&end_time=100", "end_time"),
        ("/usage/completions", "start_time=-5", "start_time"),
        ("/usage/completions", "", "start_time"),
        ("/usage/completions", "start_time=0&limit=100000000000", "limit"),
        ("/usage/completions", "start_time=0&bucket_width=1m&limit=1441", "limit"),
        ("/usage/embeddings", "start_time=0&bucket_width=2h", "bucket_width"),
        ("/costs", "start_time=0&bucket_width=1m", "bucket_width"),
        ("/usage/completions", "start_time=0&group_by[]=colour", "group_by"),
        ("/costs", "start_time=0&group_by[]=model", "group_by"),
        ("/usage/completions", "start_time=0&project_ids[]=%ED%A0%80", "project_ids"),  # a lone surrogate
        ("/usage/completions", "start_time=0&models[]=%ED%B0%80x", "models"),
        ("/usage/completions", "start_time=0&page=%ED%A0%80", "page"),
        ("/usage/completions", "start_time=0&batch=sometimes", "batch"),
        ("/costs", "start_time=0&limit=181", "limit"),
    ],
)
def test_the_worst_queries_are_refused_naming_the_parameter(
    traffic: Traffic, path: str, query: str, param: str
) -> None:
    answer = httpx.get(f"{traffic.stack.url}/v1/organization{path}?{query}",
                       headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)  # fmt: skip
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and param in error["message"]
