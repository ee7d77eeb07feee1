"""Celery's Redis result backend, with each job's result written once.

Celery reads a result before writing one, and skips the write when the job already
succeeded: two round trips, and a gap between them in which a job run twice (its
message handed out again after a worker died) can overwrite the answer its caller
was given. Here one script does both: the first result stored for a job (an answer,
a failure, or the cancellation DELETE /jobs/{id} stores) is the one that stays
(the contract's STORE_ONCE script). The result is published on the channel of the
API process awaiting it, named by the job's claim and by the job itself (`reply_to`).
What is kept is what a client may still ask for, for RESULT_TTL: the answer, and what
its claim held that GET /jobs/{id} and a resubmission read (the script folds it into
the result and drops the claim's hash); the answer's timing is published only.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import states
from celery.backends.redis import RedisBackend, SentinelBackend
from kombu.utils import json as kombu_json
from kombu.utils.encoding import bytes_to_str

from shared.contract import KEPT_CLAIM, STORE_ONCE, Keys, kept_answer, stored_answer, whole_answer
from shared.contract.keys import (
    USAGE_BUCKET_SECONDS,
    USAGE_MINUTE_SECONDS,
    TokenWindow,
    model_use_prefix,
    usage_bucket_prefix,
    usage_day,
    usage_minute,
    usage_month,
    usage_prefix,
)
from shared.registry import Prices
from shared.storage import redis_clients
from shared.telemetry import tracing
from shared.tenants import DEFAULT_TENANT, tenant_of

log = logging.getLogger(__name__)

# What Celery's extended result adds of the request (its name aside): not stored.
REQUEST_FIELDS = ("args", "kwargs", "worker", "retries", "queue")


class ResultStore(RedisBackend):
    """Used through the ``result_backend`` URL ``tasks.result_store:ResultStore+redis://…``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._store_once = self.client.register_script(STORE_ONCE)
        # The prefix Celery's settings give every key (REDIS_PREFIX:), read from them
        # rather than from the environment again.
        options = self.app.conf.result_backend_transport_options
        self._keys = Keys(options.get("global_keyprefix", ""))
        self.usage_days = int(self.app.conf.get("usage_days") or 400)
        self._default_model = str(self.app.conf.get("usage_default_model") or "default")
        self._replica_acks = int(self.app.conf.get("redis_replica_acks") or 0)
        # The models' prices (shared/broker/settings.py): an answer's cost is counted with its tokens.
        self._prices = {
            str(name): Prices(float(given[0]), None if given[1] is None else float(given[1]), float(given[2]))
            for name, given in (self.app.conf.get("usage_prices") or {}).items()
        }

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        meta = self._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        meta["task_id"] = bytes_to_str(task_id)
        # The request is its task message's and its claim's to keep: a result that
        # repeated it (Celery's extended result: args, kwargs, worker, ...) would hold
        # a job's whole prompt for RESULT_TTL. Its task's name stays.
        for name in REQUEST_FIELDS:
            meta.pop(name, None)
        if not meta.get("children"):
            meta.pop("children", None)
        if meta.get("traceback") is None:
            meta.pop("traceback", None)
        published = ""
        if state == states.SUCCESS:
            # Its requests get the answer with its run's times; the result keeps the
            # answer alone (and STORE_ONCE adds what a status and a resubmission read).
            answer = stored_answer(meta["result"])
            meta["result"] = kept_answer(answer)
            if meta["result"] is not answer:
                published = self._encoded({**meta, "result": answer})
        expires = self.failure_expires if state == states.FAILURE else self.expires
        job_key = self._keys.job(bytes_to_str(task_id))
        reply_to = reply_channel(request)
        keys = [self.get_key_for_task(task_id), job_key]
        args: list[Any] = [self._encoded(meta), int(expires), reply_to, published]
        if state in (states.SUCCESS, states.FAILURE):
            self._account(meta["task_id"], job_of(request), state, result, keys, args)
        with tracing.span("store result", attributes={"llm.job_id": meta["task_id"], "llm.state": state}):
            self.ensure(self._store, (keys, args))
        return result

    def meta_from_decoded(self, meta: dict[str, Any]) -> dict[str, Any]:
        """A stored result as Celery's readers get it (a Python client's AsyncResult): the
        answer whole, as the task returned it (but its timing, published only)."""
        meta = super().meta_from_decoded(meta)
        meta.pop(KEPT_CLAIM, None)  # the gateway's (GET /jobs/{id}), not Celery's
        if meta.get("status") == states.SUCCESS:
            meta["result"] = whole_answer(meta.get("result"))
        return meta

    def _encoded(self, meta: dict[str, Any]) -> Any:
        """JSON without the spaces after separators (a tenth of a result's bytes)."""
        if self.serializer == "json":
            return kombu_json.dumps(meta, separators=(",", ":"))
        return self.encode(meta)

    def _store(self, keys: list[str], args: list[Any]) -> int:
        if not self._replica_acks:
            return self._store_once(keys=keys, args=args)
        # With Sentinels: the result is on a replica before the job's message is
        # acknowledged. A master that dies first fails this call, and Celery's retry
        # stores the result again on the new master (STORE_ONCE: the first one stays).
        with self.client.pipeline(transaction=False) as pipe:
            self._store_once(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAIT", self._replica_acks, redis_clients.WAIT_MS)
            stored, acks = pipe.execute()
        if int(acks) < self._replica_acks:
            log.warning("result of a job on %s of %s replicas: a failover now may lose it", acks, self._replica_acks)
        return stored

    def _account(
        self, key: str, job: dict[str, Any], state: str, result: Any, keys: list[str], args: list[Any]
    ) -> None:
        """Count a job's result to its tenant, as STORE_ONCE stores it (the first only):
        the job and its tokens, as the model server reported them, in the day's and the
        minute's usage (per tenant and model) and in the tenant's tokens of the minute and of the day
        (its quotas, api/tenancy/quotas.py), and in the tenant's tokens of the minute of
        the model it asked for (its rate limits per model); an answer also in the minute's usage by bucket
        (the Administration API's usage and costs, api/admin/usage.py); and the job, ended,
        leaves its tenant's jobs in flight (whatever is deleted of it later: its place is free now)."""
        if not job or "meta" not in job:  # not a model's job (a webhook delivery, llm.models)
            return
        tenant = job.get("tenant") if isinstance(job.get("tenant"), str) else DEFAULT_TENANT
        # A model of the registry, as the API's metrics name it: the job's route, or the
        # default model its worker ran it on. Never the request's own name for it (with
        # one model server, any name goes to it): each name made up would be a row of
        # the day's usage, kept USAGE_DAYS, read by every tenant's GET /usage.
        model = asked = str(job.get("route") or self._default_model)
        if state == states.SUCCESS and isinstance(result, dict) and isinstance(result.get("served_model"), str):
            model = result["served_model"]  # a fallback model served it (tasks/model/pooled.py)
        usage = result.get("usage") if state == states.SUCCESS and isinstance(result, dict) else None
        now = time.time()
        keys += [self._keys.usage(usage_day(now)), *self._keys.token_windows(tenant, now)]
        args += [
            usage_prefix(tenant, model), "jobs" if state == states.SUCCESS else "failed",
            _count(usage, "prompt_tokens"), _count(usage, "completion_tokens"), self.usage_days * 86_400,
        ]  # fmt: skip
        # The set the API admitted it to (api/tenancy/quotas.py): its key's tenant's.
        keys.append(self._keys.in_flight(tenant_of(key)))
        args.append(key)
        keys.append(self._keys.lease(key))  # its run is over: a second delivery finds the result
        # The minute's usage too (the console's last hour, GET /usage?per=minute).
        keys.append(self._keys.usage_of_minute(usage_minute(now)))
        args.append(USAGE_MINUTE_SECONDS)
        # And by bucket, for the Administration API's usage and costs (counted when answered).
        keys.append(self._keys.usage_buckets(int(now // 60)))
        args += self._bucket_args(tenant, model, job, usage)
        # Its tokens to the model it asked for, this minute: its project's rate limit on
        # that model's tokens is checked on them (a batch's lines have their own limit: '').
        batch = bool(job.get("batch"))
        keys.append("" if batch else self._keys.model_use(tenant, TokenWindow.MINUTE, now))
        args.append("" if batch else model_use_prefix(asked))
        # And its cost (its buckets', ARGV[16]) to its tenant's spend of the month (a
        # project's spend limit: counted only where ADMIT made that count).
        keys.append(self._keys.spend(tenant, usage_month(now)[0]))

    def _bucket_args(self, tenant: str, model: str, job: dict[str, Any], usage: Any) -> list[Any]:
        """STORE_ONCE's ARGV of a job's usage by bucket: its bucket (tenant, key, batch or
        not, kind, model), its input, cached input and output tokens as the model server
        reported them (an embedding's are input only), and their cost at `model`'s prices."""
        key_id = job.get("key_id") if isinstance(job.get("key_id"), str) else ""
        kind = "embeddings" if job.get("embed") is not None else "completions"
        prompt, output = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
        details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
        cached = min(_count(details, "cached_tokens"), prompt)
        prices = self._prices.get(model)
        cost = prices.cost(prompt, output, cached) if prices is not None else 0
        prefix = usage_bucket_prefix(tenant, key_id, job.get("batch") is not None, kind, model)
        return [prefix, prompt, cached, output, cost, USAGE_BUCKET_SECONDS]


def _count(usage: Any, name: str) -> int:
    value = usage.get(name) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and value > 0 else 0


def job_of(request: Any) -> dict[str, Any]:
    """The job in a task request, or {}."""
    args = getattr(request, "args", None)
    job = args[0] if isinstance(args, (list, tuple)) and args else None
    return job if isinstance(job, dict) else {}


def reply_channel(request: Any) -> str:
    """The reply channel the job in a task request carries, or ''."""
    reply_to = job_of(request).get("reply_to")
    return reply_to if isinstance(reply_to, str) else ""


class SentinelResultStore(ResultStore, SentinelBackend):
    """The same, on the master that Redis Sentinels name (``…SentinelResultStore+sentinel://…``)."""
