"""OpenAI's Files and Batch API through the queue, as the official `openai` SDK calls
them (strict response validation): upload, create, retrieve, list, cancel, and the
output and error files in OpenAI's line format."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from testing.fake_model_server import FakeModelServer
from testing.metrics import samples, value
from testing.openai_sdk import chat_line, client, file_lines, jsonl, upload, wait_until_finished
from testing.processes import ROOT
from tests.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration


def start(sdk: openai.OpenAI, lines: list[dict[str, Any]], window: str = "24h") -> openai.types.Batch:
    """A chat batch of `lines`, created."""
    return sdk.batches.create(input_file_id=upload(sdk, lines), endpoint="/v1/chat/completions",
                              completion_window=window)  # type: ignore[arg-type]  # fmt: skip


def test_a_batch_runs_every_line_once_and_answers_in_openais_format(stack: Stack, fake: FakeModelServer) -> None:
    sdk = client(stack)
    lines = [chat_line(f"req-{n}", f"question {n}", max_tokens=20) for n in range(12)]
    file_id = upload(sdk, lines)
    assert sdk.files.retrieve(file_id).purpose == "batch"
    created = sdk.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"run": "eval-1"}
    )
    assert created.status == "validating" and created.metadata == {"run": "eval-1"}
    batch = wait_until_finished(sdk, created.id)
    assert batch.status == "completed", batch
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (12, 12, 0)
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at and batch.error_file_id is None
    output = file_lines(sdk, batch.output_file_id)
    assert [line["custom_id"] for line in output] == [f"req-{n}" for n in range(12)]
    for n, line in enumerate(output):
        assert line["error"] is None and line["id"].startswith("batch_req_")
        response = line["response"]
        assert response["status_code"] == 200
        body = openai.types.chat.ChatCompletion.model_validate(response["body"])
        assert body.choices[0].message.content == f"echo: question {n}"
    # Each line once on the model server, below interactive traffic.
    assert sorted(sent["messages"][0]["content"] for sent in fake.completions) == sorted(
        f"question {n}" for n in range(12)
    )
    assert {sent["max_tokens"] for sent in fake.completions} == {20}


def test_a_failed_line_is_in_the_error_file_and_the_rest_in_the_output(stack: Stack, fake: FakeModelServer) -> None:
    sdk = client(stack)
    fake.strict_models = True  # like vLLM: 404 for a model it does not serve
    lines = [chat_line("good", "fine"), {**chat_line("bad", "nope"), "body": {
        "model": "no-such-model", "messages": [{"role": "user", "content": "nope"}]}}]  # fmt: skip
    batch = wait_until_finished(sdk, start(sdk, lines).id)
    assert batch.status == "completed" and batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (1, 1)
    (good,) = file_lines(sdk, batch.output_file_id)
    (bad,) = file_lines(sdk, batch.error_file_id)
    assert good["custom_id"] == "good" and bad["custom_id"] == "bad"
    assert bad["response"]["status_code"] == 404 and bad["error"] is None
    assert "no-such-model" in bad["response"]["body"]["error"]["message"]


def test_a_bad_input_file_is_refused_naming_each_line(stack: Stack) -> None:
    sdk = client(stack)
    good = chat_line("a", "x")
    content = jsonl([good]) + b"{not json\n" + jsonl([
        chat_line("a", "duplicate"),
        {**chat_line("c", "x"), "url": "/v1/audio/speech"},
        {**chat_line("d", "x"), "method": "GET"},
        {**chat_line("e", "x"), "body": {"model": "m", "messages": []}},
        chat_line("f", "x", stream=True),
        {"custom_id": "g", "method": "POST", "url": "/v1/responses",
         "body": {"model": "m", "conversation": "conv_abc"}},
    ])  # fmt: skip
    with pytest.raises(openai.BadRequestError) as refused:
        upload(sdk, content)
    message = refused.value.message
    assert "7 invalid line(s)" in message
    for number, why in [
        (2, "not JSON"),
        (3, "custom_id 'a' is used by an earlier line"),
        (4, "url: must be one of"),
        (5, "method: must be 'POST'"),
        (6, "body.messages"),
        (7, "body.stream: a batch's requests are not streamed"),
        (8, "body.conversation: a batch's line is a conversation of its own"),
    ]:
        assert f"line {number}: {why}" in message, (number, message)
    assert all(f.purpose != "batch" or f.bytes != len(content) for f in sdk.files.list())


def test_files_are_listed_fetched_and_deleted(stack: Stack) -> None:
    sdk = client(stack)
    content = jsonl([chat_line("one", "1"), chat_line("two", "2")])
    file_id = upload(sdk, content, "mine.jsonl")
    found = sdk.files.retrieve(file_id)
    assert (found.filename, found.bytes, found.status) == ("mine.jsonl", len(content), "processed")
    assert file_id in [f.id for f in sdk.files.list(purpose="batch")]
    assert sdk.files.content(file_id).content == content
    deleted = sdk.files.delete(file_id)
    assert deleted.deleted and deleted.id == file_id
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(file_id)


def test_batches_are_listed_newest_first_with_pagination(stack: Stack) -> None:
    sdk = client(stack)
    file_id = upload(sdk, [chat_line("x", "y")])
    made = [
        sdk.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h").id
        for _ in range(3)
    ]
    first = sdk.batches.list(limit=2)
    assert [b.id for b in first.data] == made[::-1][:2] and first.has_more
    rest = sdk.batches.list(limit=2, after=first.data[-1].id)
    assert rest.data[0].id == made[0]
    for batch_id in made:
        wait_until_finished(sdk, batch_id)


def test_a_cancelled_batch_runs_no_more_lines_and_keeps_those_finished(
    make_stack: StackFactory, fake: FakeModelServer
) -> None:
    stack = make_stack(BATCH_LINES_IN_FLIGHT="2", BATCH_POLL_SECONDS="0.2")
    sdk = client(stack)
    fake.latency = 0.5
    lines = [chat_line(f"req-{n}", f"q{n}") for n in range(40)]
    batch = start(sdk, lines)
    deadline = time.monotonic() + 30
    while len(fake.completions) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    cancelling = sdk.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    batch = wait_until_finished(sdk, batch.id)
    assert batch.status == "cancelled" and batch.cancelled_at and batch.cancelling_at
    asked = len(fake.completions)
    output, errors = file_lines(sdk, batch.output_file_id), file_lines(sdk, batch.error_file_id)
    assert sorted(line["custom_id"] for line in output + errors) == sorted(line["custom_id"] for line in lines)
    assert 2 <= len(output) < 40 and len(output) <= asked <= len(output) + 2  # the running ones were stopped
    assert {line["error"]["code"] for line in errors} == {"batch_cancelled"}
    time.sleep(1.5)
    assert len(fake.completions) == asked  # nothing more reached the model server
    with pytest.raises(openai.ConflictError):
        sdk.batches.cancel(batch.id)


def test_with_keys_a_tenant_sees_only_its_own_files_and_batches(make_stack: StackFactory, tmp_path: Path) -> None:
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(
        "tenants:\n  - name: a\n    keys: [key-of-a, other-key-of-a]\n  - name: b\n    keys: [key-of-b]\n"
    )
    stack = make_stack(API_KEYS_FILE=str(tenants))

    def as_key(key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=key, max_retries=0, _strict_response_validation=True)

    a, b = as_key("key-of-a"), as_key("key-of-b")
    file_id = upload(a, [chat_line("x", "y")])
    batch = a.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    assert [f.id for f in b.files.list()] == [] and [x.id for x in b.batches.list()] == []
    for call in (lambda: b.files.retrieve(file_id), lambda: b.files.content(file_id),
                 lambda: b.batches.retrieve(batch.id), lambda: b.batches.cancel(batch.id)):  # fmt: skip
        with pytest.raises(openai.NotFoundError):
            call()
    with pytest.raises(openai.NotFoundError):  # b cannot run a's file either
        b.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    assert wait_until_finished(a, batch.id).status == "completed"
    assert [f.id for f in a.files.list(purpose="batch")] == [file_id]
    # Another key of the same tenant sees them: they are the tenant's, not the key's.
    assert as_key("other-key-of-a").batches.retrieve(batch.id).status == "completed"


def test_files_over_the_size_or_line_limits_are_refused(make_stack: StackFactory) -> None:
    stack = make_stack(workers=0, BATCH_MAX_FILE_BYTES="4096", BATCH_MAX_LINES="5")
    content = jsonl([chat_line(f"n{n}", "x" * 100) for n in range(60)])
    answer = httpx.post(f"{stack.url}/v1/files", files={"file": ("big.jsonl", content)}, data={"purpose": "batch"})
    assert answer.status_code == 413 and "BATCH_MAX_FILE_BYTES" in answer.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError, match=r"more than 5 requests \(BATCH_MAX_LINES\)"):
        upload(client(stack), [chat_line(f"n{n}", "x") for n in range(6)])
    assert upload(client(stack), [chat_line(f"n{n}", "x") for n in range(5)]).startswith("file-")
    with pytest.raises(openai.BadRequestError, match="purpose"):
        client(stack).files.create(file=("x.jsonl", io.BytesIO(jsonl([chat_line("a", "b")]))), purpose="fine-tune")


def test_a_batch_past_its_window_expires_with_the_rest_in_its_error_file(
    make_stack: StackFactory, fake: FakeModelServer
) -> None:
    stack = make_stack(BATCH_LINES_IN_FLIGHT="2", BATCH_POLL_SECONDS="0.2")
    sdk = client(stack)
    fake.latency = 0.3
    lines = [chat_line(f"req-{n}", f"q{n}") for n in range(60)]
    batch = start(sdk, lines, "3s")
    assert batch.expires_at == batch.created_at + 3
    batch = wait_until_finished(sdk, batch.id)
    assert batch.status == "expired" and batch.expired_at and batch.expired_at >= batch.expires_at
    output, errors = file_lines(sdk, batch.output_file_id), file_lines(sdk, batch.error_file_id)
    assert sorted(line["custom_id"] for line in output + errors) == sorted(line["custom_id"] for line in lines)
    assert output and errors
    assert {line["error"]["code"] for line in errors} == {"batch_expired"}
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (len(output), len(errors))


def test_a_batch_whose_lines_are_not_for_its_endpoint_fails_naming_them(stack: Stack, fake: FakeModelServer) -> None:
    sdk = client(stack)
    raw = {"custom_id": "raw", "method": "POST", "url": "/v1/completions", "body": {"model": "m", "prompt": "x"}}
    batch = sdk.batches.create(input_file_id=upload(sdk, [chat_line("chat", "x"), raw]),
                               endpoint="/v1/chat/completions", completion_window="24h")  # fmt: skip
    batch = wait_until_finished(sdk, batch.id)
    assert batch.status == "failed" and batch.failed_at and batch.errors and batch.errors.data
    (error,) = batch.errors.data
    assert error.line == 2 and "/v1/completions is not the batch's endpoint" in (error.message or "")
    assert fake.requests == []  # nothing ran


def test_a_raw_completion_batch_runs_on_v1_completions(stack: Stack, fake: FakeModelServer) -> None:
    sdk = client(stack)
    lines = [{"custom_id": f"p{n}", "method": "POST", "url": "/v1/completions",
              "body": {"model": "fake-model", "prompt": f"Once {n}", "max_tokens": 5}} for n in range(3)]  # fmt: skip
    batch = sdk.batches.create(input_file_id=upload(sdk, lines), endpoint="/v1/completions", completion_window="24h")
    batch = wait_until_finished(sdk, batch.id)
    assert batch.status == "completed"
    for line in file_lines(sdk, batch.output_file_id):
        body = openai.types.Completion.model_validate(line["response"]["body"])
        assert body.object == "text_completion" and body.choices
    assert sorted(sent["prompt"] for sent in fake.raw_completions) == ["Once 0", "Once 1", "Once 2"]


def test_a_window_openai_does_not_take_is_refused(stack: Stack) -> None:
    sdk = client(stack)
    file_id = upload(sdk, [chat_line("a", "b")])
    for window in ("forever", "0h", "24d"):
        with pytest.raises(openai.BadRequestError, match="completion_window"):
            sdk.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window=window)  # type: ignore[arg-type]


def test_the_batch_command_runs_a_file_end_to_end(stack: Stack, fake: FakeModelServer, tmp_path: Path) -> None:
    requests = tmp_path / "eval.jsonl"
    requests.write_bytes(jsonl([chat_line(f"c{n}", f"q{n}") for n in range(8)]))
    fake.strict_models = True
    bad = {**chat_line("bad", "x"), "body": {"model": "nope", "messages": [{"role": "user", "content": "x"}]}}
    with requests.open("ab") as more:
        more.write(jsonl([bad]))
    done = subprocess.run(
        [sys.executable, "-m", "clients.batch", str(requests), "--url", stack.url, "--poll", "0.2"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr  # one line failed
    assert "9/9  1 failed  completed" in done.stdout, done.stdout
    output = [json.loads(line) for line in (tmp_path / "eval.output.jsonl").read_text().splitlines()]
    errors = [json.loads(line) for line in (tmp_path / "eval.errors.jsonl").read_text().splitlines()]
    assert sorted(line["custom_id"] for line in output) == sorted(f"c{n}" for n in range(8))
    assert [line["custom_id"] for line in errors] == ["bad"]
    assert "output: 8 lines" in done.stdout and "errors: 1 lines" in done.stdout


def test_the_batch_command_names_the_bad_lines_of_a_file(stack: Stack, tmp_path: Path) -> None:
    requests = tmp_path / "broken.jsonl"
    requests.write_bytes(jsonl([chat_line("a", "x")]) + b"oops\n")
    done = subprocess.run(
        [sys.executable, "-m", "clients.batch", str(requests), "--url", stack.url],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode != 0 and "line 2: not JSON" in done.stderr, done.stderr


def test_metrics_show_a_running_batchs_lines_by_state(make_stack: StackFactory, fake: FakeModelServer) -> None:
    stack = make_stack(BATCH_LINES_IN_FLIGHT="3", BATCH_POLL_SECONDS="0.2")
    sdk = client(stack)
    fake.latency = 0.3
    batch = start(sdk, [chat_line(f"m{n}", "x") for n in range(30)])
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (seen.get("running") and seen.get("completed")):
        found = samples(stack.url)
        seen = {state: value(found, "llm_api_batch_lines", model="default", state=state)
                for state in ("waiting", "running", "completed", "failed")}  # fmt: skip
        time.sleep(0.1)
    assert seen["running"] == 3 and seen["completed"] > 0 and seen["waiting"] > 0, seen
    assert sum(seen.values()) == 30
    assert wait_until_finished(sdk, batch.id).status == "completed"
    assert not any(key[0] == "llm_api_batch_lines" for key in samples(stack.url))  # a finished batch leaves
