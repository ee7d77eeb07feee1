"""Celery's Redis result backend, with each job's result written once.

Celery reads a result before writing one, and skips the write when the job already
succeeded: two round trips, and a gap between them in which a job run twice (its
message handed out again after a worker died) can overwrite the answer its caller
was given. Here one script does both: the first result stored for a job (an answer,
a failure, or the cancellation DELETE /jobs/{id} stores) is the one that stays
(the contract's STORE_ONCE script). The result is published on the channel of the
API process awaiting it, named by the job's claim and by the job itself (`reply_to`).
"""

from __future__ import annotations

from typing import Any

from celery import states
from celery.backends.redis import RedisBackend
from kombu.utils.encoding import bytes_to_str

from gateway.contract import STORE_ONCE, Keys


class ResultStore(RedisBackend):
    """Used through the ``result_backend`` URL ``tasks.result_store:ResultStore+redis://…``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._store_once = self.client.register_script(STORE_ONCE)
        # The prefix Celery's settings give every key (REDIS_PREFIX:), read from them
        # rather than from the environment again.
        self._keys = Keys(self.app.conf.result_backend_transport_options.get("global_keyprefix", ""))

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
        expires = self.failure_expires if state == states.FAILURE else self.expires
        job_key = self._keys.job(bytes_to_str(task_id))
        reply_to = reply_channel(request)
        self.ensure(self._store, (self.get_key_for_task(task_id), job_key, self.encode(meta), expires, reply_to))
        return result

    def _store(self, key: str, job_key: str, value: str, expires: int, reply_to: str) -> int:
        return self._store_once(keys=[key, job_key], args=[value, int(expires), reply_to])


def reply_channel(request: Any) -> str:
    """The reply channel the job in a task request carries, or ''."""
    args = getattr(request, "args", None)
    job = args[0] if isinstance(args, (list, tuple)) and args else None
    reply_to = job.get("reply_to") if isinstance(job, dict) else None
    return reply_to if isinstance(reply_to, str) else ""
