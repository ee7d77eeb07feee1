"""The tasks called directly, with the model server replaced by a function (`Recorder`)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest

from shared.config import Config
from shared.contract import ModelServerFailed, ModelServerRejected, ModelServerUnavailable
from tasks import llm, worker
from tasks.model import ModelClient
from tasks.model.http import Reply

pytestmark = pytest.mark.unit


class Recorder:
    """A model server in a function: records bodies, answers from a list then echoes.

    Answers are written as httpx.Response for brevity, and handed over as the
    `Reply` the client reads."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.closed = False

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None,
        timeout: float,
        connect_timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        self.paths.append(path)
        if path == "/v1/models":
            return reply(httpx.Response(200, json={"data": [{"id": "served-a"}, {"id": "served-b"}]}))
        assert method == "POST" and body is not None
        request = json.loads(body)
        self.bodies.append(request)
        if self.answers:
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return reply(answer)
        return reply(completion(f"echo: {request['messages'][-1]['content']}"))

    def close(self) -> None:
        self.closed = True


def reply(response: httpx.Response) -> Reply:
    # A reply already in memory, read as the client reads one from a socket.
    return Reply(response.status_code, response.reason_phrase, dict(response.headers), io.BytesIO(response.content))


def completion(content: str) -> httpx.Response:
    """A streamed answer, as vLLM and llama.cpp send it: role, content pieces, finish, usage."""
    words = content.split(" ")
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
    chunks = [{"model": "m", "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}]
    chunks += [
        {"model": "m", "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces
    ]
    chunks.append({"model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    chunks.append(
        {"model": "m", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    )
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    return httpx.Response(200, content=body.encode(), headers={"content-type": "text/event-stream"})


def error(status: int, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": message, "type": "E", "code": status}}, headers=headers)


@pytest.fixture
def install() -> Iterator[Any]:
    sleeps: list[float] = []

    def _install(recorder: Recorder, **settings: Any) -> list[float]:
        settings = {"llm_max_retries": 2, **settings}
        config = Config(_env_file=None, inner_llm_url="model:8000", **settings)  # type: ignore[call-arg]
        client = ModelClient(config, transport=recorder, sleep=sleeps.append, clock=lambda: sum(sleeps))
        worker.WorkerTask.bind_worker(worker.Worker(config, client=client))
        return sleeps

    yield _install
    worker.WorkerTask.bind_worker(None)


META = {"temperature": 0.5, "tokens_limit": 1000, "stop_words": ["stop"], "model": "gpt-model"}


def test_generate_sends_content_as_one_user_message_with_meta_mapped(install: Any) -> None:
    model = Recorder()
    install(model)
    result = llm.generate({"meta": META, "content": "What is AI?"})
    assert result["content"] == "echo: What is AI?"
    assert model.paths == ["/v1/chat/completions"]
    assert model.bodies == [
        {
            "messages": [{"role": "user", "content": "What is AI?"}],
            "temperature": 0.5,
            "max_tokens": 1000,
            "stop": ["stop"],
            "model": "gpt-model",
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ]


def test_chat_sends_messages_as_given(install: Any) -> None:
    model = Recorder()
    install(model)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is AI?"},
        {"role": "assistant", "content": "Artificial Intelligence is..."},
    ]
    result = llm.chat({"meta": META, "messages": messages})
    assert model.bodies[0]["messages"] == messages
    assert result == {
        "content": "echo: Artificial Intelligence is...",
        "model": "m",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        "choices": [{"index": 0, "content": "echo: Artificial Intelligence is...", "finish_reason": "stop"}],
    }


def test_sampling_parameters_are_passed_on_and_every_choice_is_kept(install: Any) -> None:
    two = [
        {"choices": [{"index": 0, "delta": {"content": "first"}}]},
        {"choices": [{"index": 1, "delta": {"content": "second"}}]},
        {
            "choices": [
                {"index": 0, "delta": {}, "finish_reason": "stop"},
                {"index": 1, "delta": {}, "finish_reason": "length"},
            ]
        },
    ]
    stream = "".join(f"data: {json.dumps(c)}\n\n" for c in two) + "data: [DONE]\n\n"
    model = Recorder(httpx.Response(200, content=stream.encode(), headers={"content-type": "text/event-stream"}))
    install(model)
    result = llm.chat(
        {"meta": {"sampling": {"n": 2, "seed": 7, "top_p": 0.9}}, "messages": [{"role": "user", "content": "x"}]}
    )
    assert (model.bodies[0]["n"], model.bodies[0]["seed"], model.bodies[0]["top_p"]) == (2, 7, 0.9)
    assert result["content"] == "first"
    assert result["choices"] == [
        {"index": 0, "content": "first", "finish_reason": "stop"},
        {"index": 1, "content": "second", "finish_reason": "length"},
    ]


def test_a_temperature_left_unset_is_not_sent_so_the_servers_own_applies(install: Any) -> None:
    model = Recorder()
    install(model)
    # The API still gives OpenAI's 1.0, for a worker of the previous release (which sends it).
    llm.chat({"meta": {"temperature": 1.0, "temperature_unset": True}, "messages": [{"role": "user", "content": "x"}]})
    llm.chat({"meta": {"temperature": 1.0}, "messages": [{"role": "user", "content": "x"}]})
    assert "temperature" not in model.bodies[0] and model.bodies[1]["temperature"] == 1.0


def test_unknown_sampling_parameters_are_refused(install: Any) -> None:
    install(Recorder())
    with pytest.raises(llm.InvalidJob, match="'sampling' takes only"):
        llm.chat({"meta": {"sampling": {"logit_bias": {}}}, "messages": [{"role": "user", "content": "x"}]})


def test_a_server_that_answers_in_one_piece_is_understood(install: Any) -> None:
    whole = {
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "all at once"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
    }
    install(Recorder(httpx.Response(200, json=whole)))
    assert llm.generate({"meta": META, "content": "x"})["content"] == "all at once"


def test_an_error_in_the_middle_of_the_stream_is_retried(install: Any) -> None:
    broken = 'data: {"choices": [{"index": 0, "delta": {"content": "par"}}]}\n\ndata: {"error": {"message": "oom"}}\n\n'
    model = Recorder(httpx.Response(200, content=broken.encode(), headers={"content-type": "text/event-stream"}))
    install(model)
    assert llm.generate({"meta": META, "content": "whole"})["content"] == "echo: whole"
    assert len(model.bodies) == 2


def test_no_model_uses_the_configured_default_then_the_first_served(install: Any) -> None:
    model = Recorder()
    install(model, default_model="my-default")
    llm.generate({"meta": {}, "content": "x"})
    assert model.bodies[-1]["model"] == "my-default"
    install(model)
    llm.generate({"meta": {"model": None}, "content": "x"})
    assert model.bodies[-1]["model"] == "served-a"


def test_empty_stop_words_are_not_sent(install: Any) -> None:
    model = Recorder()
    install(model)
    llm.generate({"meta": {**META, "stop_words": ["", ""]}, "content": "x"})
    assert "stop" not in model.bodies[0]


def test_tokens_limit_beyond_the_context_is_fitted_to_it(install: Any) -> None:
    vllm = (
        "'max_tokens' or 'max_completion_tokens' is too large: 8096. This model's maximum context length"
        " is 2048 tokens and your request has 104 input tokens (8096 > 2048 - 104)."
    )
    model = Recorder(error(400, vllm))
    install(model)
    assert llm.generate({"meta": {"tokens_limit": 8096}, "content": "x"})["content"] == "echo: x"
    assert [b["max_tokens"] for b in model.bodies] == [8096, 2048 - 104]


@pytest.mark.parametrize(
    "message",
    [
        "This model's maximum context length is 2048 tokens. However, you requested 8200 tokens"
        " (104 in the messages, 8096 in the completion). Please reduce the length.",
        "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 2048."
        " Given: 104 `inputs` tokens and 8096 `max_new_tokens`",
    ],
    ids=["vllm-old", "tgi"],
)
def test_context_errors_of_other_servers_are_fitted_too(install: Any, message: str) -> None:
    model = Recorder(httpx.Response(422, json={"error": message, "error_type": "validation"}))
    install(model)
    llm.generate({"meta": {"tokens_limit": 8096}, "content": "x"})
    assert model.bodies[1]["max_tokens"] == 1944


def test_context_error_without_numbers_asks_for_the_server_default(install: Any) -> None:
    model = Recorder(error(400, "requested tokens exceed context window of the model"))
    install(model)
    llm.generate({"meta": {"tokens_limit": 8096}, "content": "x"})
    assert "max_tokens" not in model.bodies[1]


def test_unknown_model_error_names_the_served_models(install: Any) -> None:
    model = Recorder(error(404, "The model `gpt-model` does not exist."))
    install(model)
    with pytest.raises(ModelServerRejected) as caught:
        llm.generate({"meta": META, "content": "x"})
    assert caught.value.status_code == 404
    assert "served-a, served-b" in str(caught.value)
    assert len(model.bodies) == 1


def test_bad_request_fails_at_once(install: Any) -> None:
    model = Recorder(error(400, "temperature must be positive"))
    sleeps = install(model)
    with pytest.raises(ModelServerRejected, match="temperature must be positive"):
        llm.generate({"meta": META, "content": "x"})
    assert len(model.bodies) == 1 and sleeps == []


def test_server_errors_are_retried_with_backoff_then_succeed(install: Any) -> None:
    model = Recorder(error(503, "loading"), error(500, "oops"))
    sleeps = install(model)
    assert llm.generate({"meta": META, "content": "x"})["content"] == "echo: x"
    assert len(model.bodies) == 3 and len(sleeps) == 2


def test_retry_after_is_honoured(install: Any) -> None:
    model = Recorder(error(429, "slow down", **{"Retry-After": "7"}))
    sleeps = install(model)
    llm.generate({"meta": META, "content": "x"})
    assert sleeps == [7.0]


def test_unreachable_server_is_retried_a_bounded_number_of_times(install: Any) -> None:
    refused = ConnectionRefusedError(111, "Connection refused")
    model = Recorder(refused, refused, refused, refused)
    sleeps = install(model)
    with pytest.raises(ModelServerUnavailable, match=r"unreachable: .*gave up after 3 attempts") as failed:
        llm.generate({"meta": META, "content": "x"})
    assert "model:8000" not in failed.value.message  # the address is for the logs, not the answer
    assert len(model.bodies) == 3 and len(sleeps) == 2


def test_retries_stop_at_the_deadline(install: Any) -> None:
    busy = error(503, "busy", **{"Retry-After": "0.6"})
    model = Recorder(*[busy] * 10)
    sleeps = install(model, llm_max_retries=10, llm_deadline=1.0)
    with pytest.raises(ModelServerFailed, match=r"answered 503: busy \(gave up after 2 attempts in 0.6s\)"):
        llm.generate({"meta": META, "content": "x"})
    assert sleeps == [0.6]


def test_a_connection_error_without_text_is_still_named(install: Any) -> None:
    model = Recorder(ConnectionResetError(), ConnectionResetError(), ConnectionResetError())
    install(model)
    with pytest.raises(ModelServerUnavailable, match=r"unreachable: ConnectionResetError \(gave up"):
        llm.generate({"meta": META, "content": "x"})


@pytest.mark.parametrize(
    ("job", "fragment"),
    [
        ({"meta": {}}, "'content'"),
        ({"meta": {}, "content": 3}, "'content'"),
        ({"meta": {"temperature": "hot"}, "content": "x"}, "invalid 'meta'"),
    ],
)
def test_malformed_generate_jobs_are_refused(install: Any, job: dict[str, Any], fragment: str) -> None:
    install(Recorder())
    with pytest.raises(llm.InvalidJob, match=fragment):
        llm.generate(job)


def test_malformed_chat_jobs_are_refused(install: Any) -> None:
    install(Recorder())
    with pytest.raises(llm.InvalidJob, match="'messages'"):
        llm.chat({"meta": {}, "messages": [{"role": "user"}]})


def test_a_raw_completion_of_several_prompts_as_llama_cpp_streams_it(install: Any) -> None:
    # llama.cpp opens such a stream with "data: null", and interleaves the prompts' pieces.
    chunks = [
        {"choices": [{"text": " c", "index": 1, "logprobs": None, "finish_reason": None}]},
        {"choices": [{"text": " 4", "index": 0, "logprobs": None, "finish_reason": None}]},
        {"choices": [{"text": "", "index": 1, "logprobs": None, "finish_reason": "length"}]},
        {"choices": [{"text": ",", "index": 0, "logprobs": None, "finish_reason": None}]},
        {"choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": "length"}]},
    ]
    body = "data: null\n\n" + "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    recorder = Recorder(httpx.Response(200, content=body.encode(), headers={"content-type": "text/event-stream"}))
    install(recorder)
    answer = llm.complete({"meta": META, "openai": {"prompt": ["1, 2, 3,", "a, b,"], "echo": False}})
    assert [(c["index"], c["content"], c["finish_reason"]) for c in answer["choices"]] == [
        (0, " 4,", "length"),
        (1, " c", "length"),
    ]
    assert recorder.paths == ["/v1/completions"]
    assert recorder.bodies[0]["prompt"] == ["1, 2, 3,", "a, b,"] and "messages" not in recorder.bodies[0]


def test_streamed_tool_calls_are_joined_piece_by_piece(install: Any) -> None:
    calls = [
        {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"x": '}},
        {"index": 1, "id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
        {"index": 0, "function": {"arguments": "1}"}},
    ]
    chunks = [{"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]} for call in calls]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    install(Recorder(httpx.Response(200, content=body.encode(), headers={"content-type": "text/event-stream"})))
    job = {"meta": META, "openai": {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}}
    (choice,) = llm.chat(job)["choices"]
    assert choice["finish_reason"] == "tool_calls" and choice["content"] == ""
    assert choice["tool_calls"] == [
        {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
        {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
