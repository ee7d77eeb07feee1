"""The scripts that move a job through its life (shared/contract/scripts.py), run on a
real Redis. What both sides agree on without Redis is in tests/unit/shared/contract/."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from shared import contract
from shared.contract import CANCEL, CLAIM, MARK_STARTED, STORE_ONCE, Keys, TaskName


@pytest.fixture
def keys_and_store(redis_address: tuple[str, int]) -> Iterator[tuple[Keys, redis.Redis]]:
    keys = Keys(f"test-contract-{uuid.uuid4().hex[:8]}:")
    store = redis.Redis(host=redis_address[0], port=redis_address[1])
    yield keys, store
    found = list(store.scan_iter(match=f"{keys.prefix}*"))
    if found:
        store.delete(*found)
    store.close()


@pytest.mark.integration
def test_a_job_moves_through_the_scripts_and_its_first_result_reaches_its_caller(
    keys_and_store: tuple[Keys, redis.Redis],
) -> None:
    keys, store = keys_and_store
    claim, start, store_once, cancel = (store.register_script(s) for s in (CLAIM, MARK_STARTED, STORE_ONCE, CANCEL))
    listener = store.pubsub(ignore_subscribe_messages=True)
    reply_to = keys.replies("api-1")
    listener.subscribe(reply_to)
    job, now = "job-1", time.time()

    assert (
        claim(keys=[keys.job(job), keys.queued], args=["fp", TaskName.GENERATE, repr(now), 600, job, 10, reply_to])
        is None
    )
    assert (
        claim(keys=[keys.job(job), keys.queued], args=["other", TaskName.GENERATE, repr(now), 600, job, 10, ""])
        == b"fp"
    )
    assert store.zscore(keys.queued, job) is not None

    run = [keys.job(job), keys.queued, keys.result(job), keys.lease(job)]
    assert start(keys=run, args=[repr(now), 600, job, 30, "worker-a"]) == b"start"
    assert store.zscore(keys.queued, job) is None
    assert start(keys=run, args=[repr(now), 600, job, 30, "worker-b"]) == b"running"

    assert store_once(keys=[keys.result(job), keys.job(job)], args=['{"status": "SUCCESS"}', 60]) == 1
    assert store_once(keys=[keys.result(job), keys.job(job)], args=['{"status": "FAILURE"}', 60]) == 0
    assert json.loads(store.get(keys.result(job)))["status"] == "SUCCESS"
    heard = _messages(listener, 1)
    assert [json.loads(m)["status"] for m in heard] == ["SUCCESS"]

    # Ended, the job keeps one key, its result, with what a status and a resubmission read
    # of its claim, and nothing of its run.
    assert not store.exists(keys.job(job))
    assert set(contract.kept_claim(json.loads(store.get(keys.result(job))))) == {"fingerprint", "accepted_at",
                                                                                  "started_at"}  # fmt: skip
    # Another request under its job_id meets the first one's fingerprint there.
    again = ["other", TaskName.GENERATE, repr(now), 600, job, 10, ""]
    assert claim(keys=[keys.job(job), keys.queued, keys.result(job)], args=again) == b"fp"
    assert not store.exists(keys.job(job))  # not claimed anew

    # Delivered again after its answer (its message names the process awaiting it): not
    # run, the answer published again.
    assert start(keys=run, args=[repr(now), 600, job, 30, "worker-b", reply_to]) == b"answered"
    assert _messages(listener, 1) == heard
    # Too late to cancel.
    cancelled = contract.cancelled_result(job, now)
    args = [repr(now), 600, job, cancelled, 60]
    assert cancel(keys=[keys.job(job), keys.queued, keys.result(job), keys.cancel], args=args) == b"finished"
    listener.close()


@pytest.mark.integration
def test_a_job_stored_lets_go_of_its_lease(keys_and_store: tuple[Keys, redis.Redis]) -> None:
    keys, store = keys_and_store
    claim, start, store_once = (store.register_script(s) for s in (CLAIM, MARK_STARTED, STORE_ONCE))
    job, now = "job-lease", time.time()
    claim(keys=[keys.job(job), keys.queued], args=["fp", TaskName.CHAT, repr(now), 600, job, 10, ""])
    run = [keys.job(job), keys.queued, keys.result(job), keys.lease(job)]
    assert start(keys=run, args=[repr(now), 600, job, 30, "worker-a"]) == b"start"
    assert store.exists(keys.lease(job))
    counts = [keys.usage("2026-12-01"), *keys.token_windows("default", now)]
    stored = store_once(
        keys=[keys.result(job), keys.job(job), *counts, keys.in_flight("default"), keys.lease(job)],
        args=['{"status": "SUCCESS"}', 60, "", "", "default|m|", "jobs", 1, 1, 3600, job],
    )
    assert stored == 1 and not store.exists(keys.lease(job))
    # A second delivery finds the answer, not a free lease.
    assert start(keys=run, args=[repr(now), 600, job, 30, "worker-b"]) == b"answered"


@pytest.mark.integration
def test_a_result_keeps_its_answer_and_claim_and_its_requests_hear_its_run_too(
    keys_and_store: tuple[Keys, redis.Redis],
) -> None:
    keys, store = keys_and_store
    claim, start, store_once, notified = (
        store.register_script(s) for s in (CLAIM, MARK_STARTED, STORE_ONCE, contract.MARK_NOTIFIED)
    )
    reply_to = keys.replies("api-1")
    listener = store.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(reply_to)
    job, now = "job-kept", time.time()
    claim(keys=[keys.job(job), keys.queued, keys.result(job)], args=["fp", TaskName.CHAT, repr(now), 600, job, 10,
                                                                     reply_to, "team-a", "q", "1"])  # fmt: skip
    assert notified(keys=[keys.job(job)]) == 1
    run = [keys.job(job), keys.queued, keys.result(job), keys.lease(job)]
    assert start(keys=run, args=[repr(now + 1), 600, job, 30, "worker-a"]) == b"start"
    answer = {"model": "m", "choices": [{"index": 0, "content": "hi"}], "timing": {"run_seconds": 0.5}}
    heard = {"status": "SUCCESS", "result": answer, "task_id": job}
    kept = {**heard, "result": contract.kept_answer(answer)}
    assert store_once(keys=[keys.result(job), keys.job(job)], args=[json.dumps(kept), 60, "", json.dumps(heard)]) == 1
    # Its requests hear of its run (its timing); what is kept for RESULT_TTL is the answer
    # and the claim's fingerprint, times and tenant, in one key: not its queue, its
    # reply channel, its mark for webhooks.
    assert json.loads(_messages(listener, 1)[0]) == heard
    stored = store.get(keys.result(job))
    assert stored.startswith(b'{"claim":{"fingerprint":"fp",')  # where CLAIM reads it
    meta = json.loads(stored)
    assert meta["result"] == {"model": "m", "choices": [{"index": 0, "content": "hi"}]}
    assert contract.kept_claim(meta) == {"fingerprint": "fp", "accepted_at": repr(now), "started_at": repr(now + 1),
                                         "tenant": "team-a"}  # fmt: skip
    assert 0 < store.ttl(keys.result(job)) <= 60 and not store.exists(keys.job(job))
    # Marked for webhooks after its end (the API's mark comes after its queuing): nothing
    # made of it, no hash without a TTL.
    assert notified(keys=[keys.job(job)]) == 0 and not store.exists(keys.job(job))
    # Delivered again: not run, and its result as kept is published again.
    assert start(keys=run, args=[repr(now), 600, job, 30, "worker-b", reply_to]) == b"answered"
    assert _messages(listener, 1) == [stored]
    listener.close()


@pytest.mark.integration
def test_a_result_of_a_job_without_a_claim_is_stored_as_it_is(keys_and_store: tuple[Keys, redis.Redis]) -> None:
    keys, store = keys_and_store
    store_once = store.register_script(STORE_ONCE)
    for job, result in (("no-claim", '{"status": "SUCCESS"}'), ("not-json", "pickled")):
        assert store_once(keys=[keys.result(job), keys.job(job)], args=[result, 60]) == 1
        assert store.get(keys.result(job)) == result.encode()
    # A job sent from Python without the API's claim has the worker's start only: kept,
    # but with no fingerprint a request under its id claims it anew (and finds its answer).
    job, now = "started-only", time.time()
    start = store.register_script(MARK_STARTED)
    start(keys=[keys.job(job), keys.queued, keys.result(job), keys.lease(job)], args=[repr(now), 600, job, 30, "w"])
    store_once(keys=[keys.result(job), keys.job(job)], args=['{"status":"SUCCESS"}', 60])
    assert contract.kept_claim(json.loads(store.get(keys.result(job)))) == {"started_at": repr(now)}
    args = ["fp", TaskName.GENERATE, repr(now), 600, job, 10, ""]
    assert store.register_script(CLAIM)(keys=[keys.job(job), keys.queued, keys.result(job)], args=args) is None
    # Another job's stored result stored again (a test's, an operator's copy) keeps the
    # claim it has: one member `claim`, not two.
    copied = store.get(keys.result(job))
    store_once(keys=[keys.result("copy"), keys.job(job)], args=[copied, 60])
    assert store.get(keys.result("copy")) == copied


@pytest.mark.integration
def test_a_cancelled_job_is_answered_cancelled_and_never_starts(keys_and_store: tuple[Keys, redis.Redis]) -> None:
    keys, store = keys_and_store
    claim, start, cancel = (store.register_script(s) for s in (CLAIM, MARK_STARTED, CANCEL))
    listener = store.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(keys.replies("api-1"), keys.cancel)
    job, now = "job-2", time.time()
    claim(keys=[keys.job(job), keys.queued], args=["fp", TaskName.CHAT, repr(now), 600, job, 10, keys.replies("api-1")])

    args = [repr(now), 600, job, contract.cancelled_result(job, now), 60]
    assert cancel(keys=[keys.job(job), keys.queued, keys.result(job), keys.cancel], args=args) == b"cancelled"
    reply, announced = _messages(listener, 2)
    assert json.loads(reply)["status"] == contract.State.REVOKED and json.loads(reply)["task_id"] == job
    assert announced == job.encode()
    run = [keys.job(job), keys.queued, keys.result(job), keys.lease(job)]
    assert start(keys=run, args=[repr(now), 600, job, 30, "worker-a"]) == b"cancelled"
    listener.close()


@pytest.mark.integration
def test_the_reply_channel_the_job_carries_is_published_on_when_redis_lost_its_claim(
    keys_and_store: tuple[Keys, redis.Redis],
) -> None:
    keys, store = keys_and_store
    claim, start, store_once = (store.register_script(s) for s in (CLAIM, MARK_STARTED, STORE_ONCE))
    reply_to = keys.replies("api-1")
    listener = store.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(reply_to)
    job, now = "job-3", time.time()
    claim(keys=[keys.job(job), keys.queued], args=["fp", TaskName.GENERATE, repr(now), 600, job, 10, reply_to])
    store.delete(keys.job(job), keys.queued)  # a Redis restart without persistence

    run = [keys.job(job), keys.queued, keys.result(job), keys.lease(job)]
    assert start(keys=run, args=[repr(now), 600, job, 30, "worker-a", reply_to]) == b"start"
    assert store.hget(keys.job(job), "reply_to") is None
    stored = store_once(keys=[keys.result(job), keys.job(job)], args=['{"status": "SUCCESS"}', 60, reply_to])
    assert stored == 1
    assert [json.loads(m)["status"] for m in _messages(listener, 2)] == ["SUCCESS"]  # once, on the carried channel
    # A second delivery after the answer publishes it again, on the carried channel too.
    assert start(keys=run, args=[repr(now), 600, job, 30, "worker-b", reply_to]) == b"answered"
    assert len(_messages(listener, 1)) == 1

    # With the claim kept, the channel named twice is published on once.
    job = "job-4"
    claim(keys=[keys.job(job), keys.queued], args=["fp", TaskName.GENERATE, repr(now), 600, job, 10, reply_to])
    store_once(keys=[keys.result(job), keys.job(job)], args=['{"status": "SUCCESS"}', 60, reply_to])
    assert len(_messages(listener, 2)) == 1
    listener.close()


@pytest.mark.integration
def test_a_job_stored_twice_is_counted_to_its_tenant_once(keys_and_store: tuple[Keys, redis.Redis]) -> None:
    keys, store = keys_and_store
    store_once = store.register_script(STORE_ONCE)
    job = "job-usage"
    counts = [keys.usage("2026-12-01"), *keys.token_windows("team-a", 2 * 86_400 + 60)]
    ended = [keys.in_flight("team-a"), keys.lease(job), keys.usage_of_minute("2026-12-01T10:00Z")]
    given = ["team-a|m1|", "jobs", 7, 3, 3600, job, 7200]
    for run in ("first", "second"):  # run twice (redelivered): the second result is not stored
        stored = store_once(keys=[keys.result(job), keys.job(job), *counts, *ended], args=[run, 60, "", "", *given])
        assert stored == (1 if run == "first" else 0)
    # The day's usage and the minute's alike.
    for hashed in (counts[0], ended[2]):
        usage = {k.decode(): int(v) for k, v in store.hgetall(hashed).items()}
        assert usage == {"team-a|m1|jobs": 1, "team-a|m1|prompt_tokens": 7, "team-a|m1|completion_tokens": 3}
    assert [int(store.get(key)) for key in counts[1:]] == [10, 10]
    assert 0 < store.ttl(counts[1]) <= 120 and 0 < store.ttl(counts[0]) <= 3600 and 3600 < store.ttl(ended[2]) <= 7200


@pytest.mark.integration
def test_an_answer_is_counted_by_bucket_once_and_a_failure_not_at_all(keys_and_store: tuple[Keys, redis.Redis]) -> None:
    keys, store = keys_and_store
    store_once = store.register_script(STORE_ONCE)
    bucket = keys.usage_buckets(30_000_000)
    counts = [keys.usage("2026-12-01"), *keys.token_windows("proj_a", 2 * 86_400 + 60)]
    for job, count in (("answered", "jobs"), ("failed", "failed")):
        ended = [keys.in_flight("proj_a"), keys.lease(job), keys.usage_of_minute("2026-12-01T10:00Z"), bucket]
        given = ["proj_a|m1|", count, 7, 3, 3600, job, 7200, "proj_a|key_1|0|completions|m1|", 7, 4, 3, 2500, 7200]
        for run in ("first", "second"):  # run twice (redelivered): counted once
            store_once(keys=[keys.result(job), keys.job(job), *counts, *ended], args=[run, 60, "", "", *given])
    usage = {k.decode(): int(v) for k, v in store.hgetall(bucket).items()}
    prefix = "proj_a|key_1|0|completions|m1|"
    assert usage == {f"{prefix}requests": 1, f"{prefix}input": 7, f"{prefix}cached": 4, f"{prefix}output": 3,
                     f"{prefix}cost": 2500}  # fmt: skip
    assert 3600 < store.ttl(bucket) <= 7200


def _messages(listener: Any, count: int) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + 5
    while len(got) < count and time.monotonic() < deadline:
        message = listener.get_message(timeout=0.5)
        if message:
            got.append(message["data"])
    return got


@pytest.mark.integration
def test_a_projects_month_is_made_by_its_admission_counted_by_its_results_and_refused_at_its_limit(
    keys_and_store: tuple[Keys, redis.Redis],
) -> None:
    keys, store = keys_and_store
    admit, store_once = store.register_script(contract.ADMIT), store.register_script(STORE_ONCE)
    now, month = time.time(), "2026-12"
    spend = keys.spend("proj_1", month)
    quotas = keys.in_flight("proj_1"), *keys.token_windows("proj_1", now)
    windows = keys.model_use_windows("proj_1", now)

    def admitted(job: str, limit: int, seed: int, model: str = "") -> Any:
        # No model's limits: '' in their places (KEYS[4..5], ARGV[8..11]), the spend's after them.
        names = [*quotas, *(windows if model else ["", ""]), spend]
        args = [job, repr(now), 0, 0, 0, keys.result(""), 600, model, 2 if model else 0, 0, 0, limit, seed, 3600]
        return admit(keys=names, args=args)

    def stored(job: str, cost: int, first: bool = True, count: str = "jobs") -> None:
        usage = [keys.usage("2026-12-07"), *keys.token_windows("proj_1", now), keys.in_flight("proj_1"),
                 keys.lease(job), keys.usage_of_minute("2026-12-07T12:00Z"), keys.usage_buckets(int(now // 60)),
                 "", spend]  # fmt: skip
        args = ['{"status":"SUCCESS"}', 60, "", "", "proj_1|m|", count, 3, 4, 86_400, job, 7200,
                "proj_1||0|completions|m|", 3, 0, 4, cost, 60, ""]  # fmt: skip
        assert store_once(keys=[keys.result(job), keys.job(job), *usage], args=args) == int(first)

    # A result stored while Redis holds no count of the month adds nothing: the month is
    # made by an admission, from the usage history (the seed), never from 0.
    stored("early", 5_000)
    assert store.get(spend) is None
    assert admitted("j1", 10_000, 4_000) is None
    assert store.get(spend) == b"4000" and 0 < store.ttl(spend) <= 3600
    stored("j1", 5_000)
    assert store.get(spend) == b"9000"
    stored("failed", 5_000, count="failed")  # a failed job is not counted, as in its buckets
    assert store.get(spend) == b"9000"
    assert admitted("j2", 10_000, 0) is None  # the seed is only where Redis holds nothing
    stored("j2", 1_500)
    stored("j2", 1_500, first=False)  # a result stored again is not counted again
    assert admitted("j3", 10_000, 0) == [b"spend_limit", b"10500"]
    # With a model's limits too: refused for its spend first, no request of the model counted.
    assert admitted("j3", 10_000, 0, model="big|") == [b"spend_limit", b"10500"]
    assert store.hgetall(windows[0]) == {}
    assert admitted("j3", 20_000, 0) is None  # a limit raised lets it through
    assert admitted("j4", 20_000, 0, model="big|") is None
    assert admitted("j5", 20_000, 0, model="big|") is None
    assert admitted("j6", 20_000, 0, model="big|") == [b"max_requests_per_1_minute", 2]
    # Without the month's key (a project without a limit), admission reads no spend.
    assert admit(keys=list(quotas), args=["j7", repr(now), 0, 0, 0, keys.result(""), 600]) is None


@pytest.mark.integration
def test_a_models_rate_limits_admit_exactly_their_count_and_a_refusal_counts_nothing(
    keys_and_store: tuple[Keys, redis.Redis],
) -> None:
    keys, store = keys_and_store
    admit, store_once = store.register_script(contract.ADMIT), store.register_script(STORE_ONCE)
    now = 2 * 86_400 + 30.0
    tenant = [keys.in_flight("proj_a"), *keys.token_windows("proj_a", now)]
    windows = keys.model_use_windows("proj_a", now)

    def asked(job: str, rpm: int = 3, tpm: int = 0, rpd: int = 0, model: str = "big|") -> Any:
        args = [job, repr(now), 0, 0, 0, keys.result(""), 3600, model, rpm, tpm, rpd]
        return admit(keys=[*tenant, *windows], args=args)

    refused = [b"max_requests_per_1_minute", 3]
    assert [asked(f"j{n}") for n in range(5)] == [None, None, None, refused, refused]
    minute = {k.decode(): int(v) for k, v in store.hgetall(windows[0]).items()}
    assert minute == {"big|requests": 3}  # the refused counted nothing
    assert 60 < store.ttl(windows[0]) <= 120 and 86_400 < store.ttl(windows[1]) <= 172_800
    # Another model of the same project has its own count; a day's limit counts the same requests.
    assert asked("j5", model="small|") is None
    assert asked("j6", rpm=0, rpd=3) == [b"max_requests_per_1_day", 3]
    # Tokens as a worker stores a job's result (STORE_ONCE, the same minute's hash): past
    # the model's tokens per minute, the next job is refused.
    usage = [keys.usage("1970-01-03"), *keys.token_windows("proj_a", now)]
    ended = [keys.in_flight("proj_a"), keys.lease("j0"), keys.usage_of_minute("1970-01-03T00:00Z")]
    ended += [keys.usage_buckets(int(now // 60)), windows[0]]
    given = ["proj_a|big|", "jobs", 70, 40, 3600, "j0", 7200, "proj_a||0|completions|big|", 70, 0, 40, 0, 60, "big|"]
    assert store_once(keys=[keys.result("j0"), keys.job("j0"), *usage, *ended], args=["r", 60, "", "", *given]) == 1
    assert int(store.hget(windows[0], "big|tokens") or 0) == 110
    assert asked("j7", rpm=0, tpm=110) == [b"max_tokens_per_1_minute", 110]
    assert asked("j8", rpm=0, tpm=111) is None


@pytest.mark.integration
def test_a_batch_is_charged_to_its_models_days_all_or_nothing_and_once(
    keys_and_store: tuple[Keys, redis.Redis],
) -> None:
    keys, store = keys_and_store
    charge = store.register_script(contract.scripts.BATCH_CHARGE)
    day = keys.model_use("proj_a", contract.keys.TokenWindow.DAY, 2 * 86_400)

    def charged() -> dict[str, int]:
        return {k.decode(): int(v) for k, v in store.hgetall(day).items() if not k.startswith(b"batch:")}

    assert charge(keys=[day], args=["batch_1", 172_800, "big|", 60, 100, "small|", 5, 10]) is None
    assert charged() == {"big|batch_input_tokens": 60, "small|batch_input_tokens": 5}
    # Driven again (its process died): not charged twice.
    assert charge(keys=[day], args=["batch_1", 172_800, "big|", 60, 100, "small|", 5, 10]) is None
    # Past one model's limit: refused whole, nothing charged to the other either.
    assert charge(keys=[day], args=["batch_2", 172_800, "small|", 1, 10, "big|", 41, 100]) == [b"big|", 60]
    assert charged() == {"big|batch_input_tokens": 60, "small|batch_input_tokens": 5}
    assert charge(keys=[day], args=["batch_3", 172_800, "big|", 40, 100]) is None
    assert charged()["big|batch_input_tokens"] == 100 and 86_400 < store.ttl(day) <= 172_800
