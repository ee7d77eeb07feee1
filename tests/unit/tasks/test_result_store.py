"""The result store: what a job's result is stored as, once (STORE_ONCE), and what it
counts to the job's tenant. Redis is scripted at the edge (testing/scripted_redis.py);
STORE_ONCE itself runs on a real Redis in tests/integration/shared/test_contract.py."""

from __future__ import annotations

import json
import logging
import time
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery, states

from shared.contract import Keys
from shared.contract.keys import (
    USAGE_BUCKET_SECONDS,
    USAGE_MINUTE_SECONDS,
    TokenWindow,
    usage_day,
    usage_minute,
    usage_month,
)
from shared.registry import Prices
from tasks.result_store import ResultStore, job_of, reply_channel
from testing.scripted_redis import ScriptedRedis, arity

pytestmark = pytest.mark.unit

ANSWER = {
    "content": "hi",
    "finish_reason": "stop",
    "model": "m",
    "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    "choices": [{"index": 0, "content": "hi", "finish_reason": "stop"}],
}
KEYS = Keys("p:")


class Scripted(ResultStore):
    """The result store on a scripted Redis: its client is the edge the test writes."""

    fake: ScriptedRedis

    def _create_client(self, **params: Any) -> Any:
        return self.fake


def store(replica_acks: int = 0, **answers: Any) -> tuple[ResultStore, ScriptedRedis]:
    app = Celery(set_as_current=False)
    app.conf.update(
        result_backend_transport_options={"global_keyprefix": "p:"},
        result_extended=True,
        usage_days=10,
        usage_default_model="default-model",
        redis_replica_acks=replica_acks,
        # USD per million input, cached input (None: input's) and output tokens.
        usage_prices={"priced": [2.0, 0.5, 8.0], "flat": [1.0, None, 3.0], "uncached": [2.0, None, 8.0]},
    )
    fake = ScriptedRedis({"STORE_ONCE": 1, **answers})
    backend = type("Store", (Scripted,), {"fake": fake})(app=app, url="redis://127.0.0.1:1/0")
    return backend, fake


def request(job: Any, task: str = "llm.chat") -> SimpleNamespace:
    return SimpleNamespace(task=task, args=[job], kwargs={}, hostname="celery@w1", retries=0,
                           delivery_info={"routing_key": "q"}, children=[])  # fmt: skip


def test_an_answer_is_stored_once_without_its_request_or_what_repeats_its_first_choice() -> None:
    backend, fake = store()
    job = {"meta": {}, "messages": [{"role": "user", "content": "a long prompt"}], "reply_to": "replies:api-1"}
    backend._store_result("j1", dict(ANSWER), states.SUCCESS, request=request(job))
    (call,) = fake.named("STORE_ONCE")
    assert call.keys[:2] == [KEYS.result("j1").encode(), KEYS.job("j1")]  # where the API reads it
    stored_json, seconds, reply_to = call.argv[:3]
    assert ", " not in stored_json and ": " not in stored_json  # compact: a tenth of a result's bytes
    stored = json.loads(stored_json)
    assert (stored["status"], stored["task_id"], stored["name"]) == ("SUCCESS", "j1", "llm.chat")
    assert not {"args", "kwargs", "worker", "retries", "queue", "traceback", "children"} & set(stored)
    assert "a long prompt" not in stored_json
    assert "content" not in stored["result"] and stored["result"]["choices"] == ANSWER["choices"]
    assert seconds == backend.expires and reply_to == "replies:api-1"
    # Read back as a Python client's AsyncResult reads it: whole.
    assert backend.meta_from_decoded(stored)["result"] == ANSWER


def test_a_model_jobs_result_counts_its_tokens_to_its_tenant_and_the_model_that_served_it() -> None:
    backend, fake = store()
    job = {"meta": {}, "route": "big", "tenant": "acme"}
    backend._store_result("acme~j1", {**ANSWER, "served_model": "fallback"}, states.SUCCESS, request=request(job))
    (call,) = fake.named("STORE_ONCE")
    assert (len(call.keys), len(call.argv)) == arity("STORE_ONCE")
    now = time.time()
    assert call.keys[2] == KEYS.usage(usage_day(now)) and call.keys[3:5] == KEYS.token_windows("acme", now)
    assert call.keys[5:7] == [KEYS.in_flight("acme"), KEYS.lease("acme~j1")]
    # The minute's usage too (GET /usage?per=minute), kept two hours.
    assert call.keys[7] in {KEYS.usage_of_minute(usage_minute(at)) for at in (now - 60, now)}
    assert call.argv[4:11] == ["acme|fallback|", "jobs", 3, 4, 10 * 86_400, "acme~j1", USAGE_MINUTE_SECONDS]
    # And by bucket (the Administration API's usage): a key without an id, not a batch's, a completion.
    assert call.keys[8] in {KEYS.usage_buckets(int(at // 60)) for at in (now - 60, now)}
    assert call.argv[11:17] == ["acme||0|completions|fallback|", 3, 0, 4, 0, USAGE_BUCKET_SECONDS]
    # Its tokens to the model it asked for, this minute: its project's rate limit on that
    # model is checked on them (in the same call).
    assert call.keys[9] in {KEYS.model_use("acme", TokenWindow.MINUTE, at) for at in (now - 60, now)}
    assert call.argv[17] == "big|"
    # Its cost (its buckets', none: the model has no prices) to the tenant's spend of the month.
    assert call.keys[10] in {KEYS.spend("acme", usage_month(at)[0]) for at in (now - 60, now)}
    assert (len(call.keys), len(call.argv)) == arity("STORE_ONCE")


def test_a_batch_lines_tokens_are_not_counted_to_its_models_limit_per_minute() -> None:
    backend, fake = store()
    job = {"meta": {}, "route": "big", "tenant": "acme", "batch": {"id": "batch_1", "line": 0}}
    backend._store_result("acme~j1", dict(ANSWER), states.SUCCESS, request=request(job))
    (call,) = fake.named("STORE_ONCE")
    # Its usage counted, not the model's minute ('' in its place), and its cost to its month.
    assert (len(call.keys), len(call.argv)) == arity("STORE_ONCE")
    assert call.keys[9] == "" and call.argv[17] == "" and call.keys[10].startswith(KEYS.spend("acme", ""))
    assert call.argv[4] == "acme|big|"


def test_a_failure_counts_as_failed_on_the_jobs_route_with_no_tokens() -> None:
    backend, fake = store()
    failure = {"exc_type": "ModelServerUnavailable", "exc_message": ["down"], "exc_module": "shared.contract"}
    backend._store_result("j1", failure, states.FAILURE, request=request({"meta": {}}))
    (call,) = fake.named("STORE_ONCE")
    assert call.argv[1] == backend.failure_expires
    assert call.argv[4:11] == ["default|default-model|", "failed", 0, 0, 10 * 86_400, "j1", USAGE_MINUTE_SECONDS]
    assert call.argv[12:16] == [0, 0, 0, 0]  # by bucket, STORE_ONCE counts answers only
    assert call.argv[17] == "default-model|"
    assert call.keys[5] == KEYS.in_flight("default")


def test_an_answer_is_counted_by_bucket_with_its_key_cached_tokens_and_cost_at_its_models_prices() -> None:
    backend, fake = store()
    usage = {"prompt_tokens": 1000, "completion_tokens": 200, "prompt_tokens_details": {"cached_tokens": 400}}
    job = {"meta": {}, "route": "priced", "tenant": "proj_a", "key_id": "key_1", "batch": {"id": "b", "line": 3}}
    backend._store_result("proj_a~j1", {**ANSWER, "usage": usage}, states.SUCCESS, request=request(job))
    (call,) = fake.named("STORE_ONCE")
    # 600 uncached at $2, 400 cached at $0.50, 200 out at $8 per million: 1200 + 200 + 1600 micro-USD.
    assert call.argv[11:17] == ["proj_a|key_1|1|completions|priced|", 1000, 400, 200, 3_000_000, USAGE_BUCKET_SECONDS]


def test_an_embedding_is_counted_as_one_with_input_tokens_only_and_cached_at_the_input_price() -> None:
    backend, fake = store()
    job = {"meta": {}, "route": "flat", "tenant": "t", "embed": {"input": ["a"]}}
    answer = {"embeddings": ["AAAA"], "model": "m", "usage": {"prompt_tokens": 7, "total_tokens": 7}}
    backend._store_result("t~j1", answer, states.SUCCESS, request=request(job, "llm.embed"))
    (call,) = fake.named("STORE_ONCE")
    assert call.argv[11:17] == ["t||0|embeddings|flat|", 7, 0, 0, 7000, USAGE_BUCKET_SECONDS]


def test_more_cached_tokens_than_input_are_counted_as_the_input_and_an_unpriced_model_costs_nothing() -> None:
    backend, fake = store()
    usage = {"prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 9}}
    backend._store_result("j1", {**ANSWER, "usage": usage}, states.SUCCESS, request=request({"meta": {}}))
    (call,) = fake.named("STORE_ONCE")
    assert call.argv[11:17] == ["default||0|completions|default-model|", 5, 5, 1, 0, USAGE_BUCKET_SECONDS]


@pytest.mark.parametrize(
    "job",
    [{"endpoint": "hooks", "event": {}}, {}],  # a webhook delivery; the gateway's own GET /v1/models
)
def test_what_is_not_a_models_job_is_stored_but_counted_to_nobody(job: dict[str, Any]) -> None:
    backend, fake = store()
    backend._store_result("j1", {"models": ["m"]}, states.SUCCESS, request=request(job, "llm.models"))
    (call,) = fake.named("STORE_ONCE")
    assert len(call.keys) == 2 and len(call.argv) == 4


def test_with_replicas_the_result_waits_for_them_and_says_when_too_few_hold_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend, fake = store(replica_acks=2, execute_command=1)
    with caplog.at_level(logging.WARNING):
        backend._store_result("j1", dict(ANSWER), states.SUCCESS, request=request({"meta": {}}))
    assert [call.name for call in fake.calls] == ["STORE_ONCE", "execute_command"]
    assert fake.calls[1].args[:2] == ("WAIT", 2)
    assert "on 1 of 2 replicas" in caplog.text


def test_the_job_and_its_reply_channel_are_read_off_any_request() -> None:
    assert job_of(SimpleNamespace(args=({"meta": {}},))) == {"meta": {}}
    assert job_of(SimpleNamespace(args=["not a job"])) == {} and job_of(None) == {}
    assert reply_channel(SimpleNamespace(args=[{"reply_to": "replies:a"}])) == "replies:a"
    assert reply_channel(SimpleNamespace(args=[{"reply_to": 7}])) == ""


@pytest.mark.parametrize(
    ("model", "usage", "cost"),
    [
        # 1000 prompt tokens at 2 USD, 500 completion at 8 USD per million: 0.006 USD.
        ("priced", {"prompt_tokens": 1000, "completion_tokens": 500}, 6_000_000),
        # 400 of the prompt's tokens cached: at 0.5 USD per million.
        ("priced", {"prompt_tokens": 1000, "completion_tokens": 500, "prompt_tokens_details": {"cached_tokens": 400}},
         Prices(2.0, 0.5, 8.0).cost(1000, 500, 400)),
        # Without a cached price: cached tokens at the input's.
        ("uncached", {"prompt_tokens": 1000, "completion_tokens": 500,
                      "prompt_tokens_details": {"cached_tokens": 400}}, 6_000_000),
        # An embedding's usage: prompt tokens only.
        ("priced", {"prompt_tokens": 10, "total_tokens": 10}, 20_000),
        ("priced", {"prompt_tokens": -5, "completion_tokens": "many", "prompt_tokens_details": None}, 0),
        ("free", {"prompt_tokens": 1000, "completion_tokens": 500}, 0),
    ],
)  # fmt: skip
def test_a_jobs_cost_is_its_reported_tokens_at_its_models_prices(model: str, usage: Any, cost: int) -> None:
    backend, fake = store()
    job = {"meta": {}, "route": model, "tenant": "proj_1"}
    backend._store_result("proj_1~j1", {**ANSWER, "usage": usage}, states.SUCCESS, request=request(job))
    (call,) = fake.named("STORE_ONCE")
    # Its buckets' cost (ARGV[16]) is what STORE_ONCE adds to the tenant's spend of the month.
    assert call.argv[15] == cost and call.keys[-1].startswith(KEYS.spend("proj_1", ""))
    assert (len(call.keys), len(call.argv)) == arity("STORE_ONCE")
