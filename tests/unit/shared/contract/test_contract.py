"""The contract both sides share: an answer stored once and read back whole, the task
names the workers register, the jobs the API builds, the failures the workers raise and
the statuses the API answers them with."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest
import redis
from celery import Celery
from celery.backends.base import BaseBackend

from api.errors import job_failure
from api.http.statuses import status_of
from api.jobs.store import fingerprint
from api.native.types import ChatCompletionRequest, GenerateRequest
from api.openai.chat.types import OpenAIChatRequest
from api.openai.completions.types import OpenAICompletionRequest
from shared import contract
from shared.contract import FAILURES, InvalidJob, Job, TaskName, kept_answer, kept_claim, stored_answer, whole_answer
from tasks import dead_letters, llm
from tasks.model import client, protocol, stream
from testing.processes import ROOT

pytestmark = pytest.mark.unit

ANSWER = {
    "content": "echo: hi",
    "model": "m",
    "finish_reason": "stop",
    "usage": {"prompt_tokens": 1, "completion_tokens": 2},
    "choices": [{"index": 0, "content": "echo: hi", "finish_reason": "stop"}, {"index": 1, "content": "other"}],
}


def test_an_answer_is_stored_without_what_repeats_its_first_choice_and_read_back_whole() -> None:
    stored = stored_answer(ANSWER)
    assert "content" not in stored and "finish_reason" not in stored
    assert stored["choices"] == ANSWER["choices"]
    assert whole_answer(stored) == ANSWER


def test_what_does_not_repeat_the_first_choice_is_kept_as_it_is() -> None:
    tools = {**ANSWER, "content": "", "choices": [{"index": 0, "content": None, "finish_reason": "tool_calls"}]}
    assert stored_answer(tools)["content"] == ""  # not the choice's None: kept
    assert whole_answer(stored_answer(tools)) == tools
    embedding = {"data": [{"embedding": [0.1]}], "usage": {"prompt_tokens": 1}}
    assert stored_answer(embedding) is embedding and whole_answer(embedding) is embedding
    assert whole_answer(ANSWER) is ANSWER  # stored whole before this change: read as it is


def test_every_failure_a_worker_raises_is_in_the_contract() -> None:
    raised = {
        obj
        for module in (client, protocol, stream, llm, dead_letters)
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, contract.JobFailure) and obj is not contract.JobFailure
    }
    assert {cls for cls in raised if cls is not contract.ModelServerError} <= set(FAILURES.values())


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        (contract.ModelServerUnavailable("down"), 502),
        (contract.ModelServerFailed("answered 500", 500), 502),
        (contract.ModelServerTimeout("slow"), 504),
        (contract.ModelServerRejected("no such model", 404), 404),
        (contract.ModelServerRejected("bad", None), 400),
        (contract.InvalidJob("bad job"), 422),
        (RuntimeError("bug"), 500),
    ],
)
def test_a_failure_stored_by_celery_is_answered_with_the_contracts_status(failure: Exception, status: int) -> None:
    # As Celery's result backend stores it (JSON): the class name, module and arguments.
    backend = BaseBackend(app=Celery(set_as_current=False), serializer="json")
    stored = json.loads(json.dumps(backend.prepare_exception(failure, "json")))
    error = job_failure(stored["exc_type"], stored["exc_message"], stored["exc_module"])
    assert status_of(error) == status
    # The contract's failures say what the caller may know; any other only which part failed.
    assert (str(failure.args[0]) in error.message) is (status != 500)
    assert error.cause == type(failure).__name__


def test_a_failure_the_contract_does_not_name_says_which_part_not_where_it_lives() -> None:
    backend = BaseBackend(app=Celery(set_as_current=False), serializer="json")
    outage = redis.exceptions.ConnectionError("Error 111 connecting to localhost:6379. Connection refused.")
    stored = json.loads(json.dumps(backend.prepare_exception(outage, "json")))
    error = job_failure(stored["exc_type"], stored["exc_message"], stored["exc_module"])
    assert status_of(error) == 500 and error.cause == "ConnectionError"
    assert "the result store (Redis)" in error.message and "6379" not in error.message
    assert "localhost" not in error.message


def test_the_failures_a_caller_must_fix_are_not_kept_as_dead_letters() -> None:
    assert not contract.is_kept("ModelServerRejected")
    assert contract.is_kept("ModelServerUnavailable") and contract.is_kept("SomethingUnforeseen")


def _api_jobs() -> list[tuple[TaskName, dict[str, Any]]]:
    # As the API's endpoints build them (api/native/router.py, api/openai/chat/router.py).
    spec_generate = GenerateRequest(content="hi", meta={"stop_words": ["x"], "priority": 9})
    spec_chat = ChatCompletionRequest(messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
    chat = OpenAIChatRequest(messages=[{"role": "user", "content": "u"}], top_p=0.5, n=2, seed=3, stop="end")
    completion = OpenAICompletionRequest(prompt="p", max_tokens=5)
    return [
        (TaskName.GENERATE, spec_generate.model_dump(exclude={"job_id", "stream"})),
        (TaskName.CHAT, spec_chat.model_dump(exclude={"job_id", "stream"})),
        (TaskName.CHAT, {"meta": chat.meta(chat.max_tokens), "messages": [m.model_dump() for m in chat.messages]}),
        (TaskName.GENERATE, {"meta": completion.meta(completion.max_tokens), "content": completion.prompt}),
    ]


@pytest.mark.parametrize(("task", "job"), _api_jobs())
def test_every_job_the_api_builds_is_one_the_workers_take(task: TaskName, job: dict[str, Any]) -> None:
    sent = json.loads(json.dumps({**job, "route": "small", "stream": True, "accepted_at": time.time()}))
    parsed = Job.parse(sent)
    assert parsed.prompt(task)[-1]["content"] in ("hi", "u", "p")
    assert parsed.meta.temperature == job["meta"]["temperature"]
    assert parsed.meta.sampling == {k: v for k, v in (job["meta"].get("sampling") or {}).items() if v is not None}
    # When it was accepted and whether it streams are not what makes two jobs the same.
    assert fingerprint(task, job) == fingerprint(task, {**job, "stream": True, "accepted_at": 1.0})


@pytest.mark.parametrize(
    ("task", "job", "says"),
    [
        (TaskName.GENERATE, {"meta": {}}, "'content'"),
        (TaskName.CHAT, {"meta": {}, "messages": []}, "'messages'"),
        (TaskName.CHAT, {"messages": [{"role": "user"}]}, "invalid 'messages': 0.content"),
        (TaskName.GENERATE, {"content": "x", "meta": {"sampling": {"top_k": 3}}}, "'sampling' takes only"),
        (TaskName.GENERATE, {"content": "x", "meta": {"temperature": "hot"}}, "invalid 'meta': temperature"),
    ],
)
def test_a_job_outside_the_contract_is_refused_naming_what_is_wrong(
    task: TaskName, job: dict[str, Any], says: str
) -> None:
    with pytest.raises(InvalidJob, match=says):
        Job.parse(job).prompt(task)


def test_the_api_imports_the_contract_and_no_worker_code() -> None:
    probe = "import sys, api.main; print(sorted({m.split('.')[0] for m in sys.modules} & {'tasks', 'shared'}))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "['shared']"


@pytest.mark.parametrize(
    ("exc_type", "args", "module", "answer"),
    [
        ("ModelServerRejected", ["no such model", 404], "", (404, "no such model")),
        ("ModelServerRejected", ["bad", 502], "", (400, "bad")),  # only a 4xx is passed on
        ("ModelServerTimeout", ["slow"], "", (504, "slow")),
        ("InvalidJob", [], "", (422, "InvalidJob")),
        ("OperationalError", ["[Errno 111] Connection refused"], "kombu.exceptions", (500, "the broker")),
        ("KeyError", ["'x'"], "builtins", (500, "the worker")),
    ],
)
def test_each_failure_has_its_status_and_an_unnamed_one_says_only_which_part(
    exc_type: str, args: list[Any], module: str, answer: tuple[int, str]
) -> None:
    status, message = contract.failure_status(exc_type, args, module)
    assert status == answer[0] and answer[1] in message
    if status == 500:
        assert "111" not in message and "'x'" not in message


def test_an_embedding_jobs_inputs_are_strings_or_token_ids_never_mixed() -> None:
    assert Job.parse({"embed": {"input": ["a", "b"]}}).embed_inputs() == ["a", "b"]
    assert Job.parse({"embed": {"input": [[1, 2], [3]]}}).embed_inputs() == [[1, 2], [3]]
    for given in (["a", [1]], [], [[]], "a", None, [[1, "2"]]):
        with pytest.raises(InvalidJob, match=r"'embed\.input'"):
            Job.parse({"embed": {"input": given}}).embed_inputs()


def test_an_openai_job_is_sent_as_the_client_wrote_it() -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}, {"role": "tool", "content": "4"}]
    job = Job.parse({"openai": {"messages": messages, "tools": []}, "messages": [{"role": "user", "content": "x"}]})
    assert job.prompt(TaskName.CHAT) == messages  # every role and content part, over the spec's form
    assert Job.parse({"openai": {"prompt": ["a", "b"]}}).prompt(TaskName.COMPLETE) == []
    with pytest.raises(InvalidJob, match=r"'openai\.prompt'"):
        Job.parse({"openai": {"prompt": 3}}).prompt(TaskName.COMPLETE)
    with pytest.raises(InvalidJob, match=r"'openai\.messages'"):
        Job.parse({"openai": {"messages": []}}).prompt(TaskName.CHAT)


def test_a_job_of_a_newer_api_is_taken_and_one_that_is_not_an_object_is_refused() -> None:
    job = Job.parse({"content": "x", "meta": {"sampling": {"seed": 3, "top_p": None}}, "added_later": 1})
    assert job.meta.sampling == {"seed": 3} and job.prompt(TaskName.GENERATE) == [{"role": "user", "content": "x"}]
    with pytest.raises(InvalidJob, match="a JSON object"):
        Job.parse(["content"])
    with pytest.raises(InvalidJob, match="invalid 'weight'"):
        Job.parse({"content": "x", "weight": 0})


def test_a_cancelled_result_is_stored_as_celery_stores_a_revoked_task() -> None:
    stored = json.loads(contract.cancelled_result("j1", 0.0))
    assert (stored["status"], stored["task_id"], stored["date_done"]) == ("REVOKED", "j1", "1970-01-01T00:00:00+00:00")
    assert stored["result"]["exc_type"] == "TaskRevokedError"
    backend = BaseBackend(app=Celery(set_as_current=False), serializer="json")
    assert backend.meta_from_decoded(stored)["status"] == "REVOKED"


def test_a_kept_answer_leaves_its_runs_timing_to_the_requests_that_awaited_it() -> None:
    ran = {**ANSWER, "timing": {"run_seconds": 0.2, "queued_seconds": 0.1}}
    kept = kept_answer(ran)
    assert "timing" not in kept and "content" not in kept  # the text once, in its choice
    assert whole_answer(kept) == ANSWER
    assert "timing" in ran  # the task's own answer is left as it is (it is published)
    embedding = {"embeddings": ["AACAPw=="], "usage": {"prompt_tokens": 1}}
    assert kept_answer(embedding) is embedding


def test_the_claim_a_result_keeps_is_read_back_as_its_hash_had_it() -> None:
    meta = {"claim": {"fingerprint": "ab", "accepted_at": "1.5", "tenant": "t"}, "status": "SUCCESS"}
    assert kept_claim(meta) == {"fingerprint": "ab", "accepted_at": "1.5", "tenant": "t"}
    # A result stored before (or of a job without the API's claim) keeps none.
    assert kept_claim({"status": "SUCCESS"}) == {} and kept_claim(None) == {}
    assert kept_claim({"claim": "?"}) == {} and kept_claim({"claim": {"started_at": 1.5}}) == {}
