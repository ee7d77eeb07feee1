"""The client of one model server: what it sends, how it reads each kind of failure, when it
tries again and when it must not. The model server is a transport answering as the
test says (testing/model_transport.py; its tasks' view is in tests/unit/tasks/test_llm.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shared.config import Config
from shared.contract import ModelServerFailed, ModelServerRejected, ModelServerTimeout, ModelServerUnavailable
from tasks.model.client import MAX_RETRY_AFTER, ModelClient
from tasks.model.http import ConnectTimeout
from tasks.model.protocol import ChatRequest
from testing.fake_model_server import FakeModelServer
from testing.model_transport import ModelTransport as Server
from testing.model_transport import error, streamed

pytestmark = pytest.mark.unit


def cut_off(*pieces: str) -> httpx.Response:
    return streamed(*pieces, finish=None)


class Clock:
    """time.monotonic() for the client: moves only as it sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def client(server: Server, clock: Clock | None = None, **settings: Any) -> ModelClient:
    clock = clock or Clock()
    config = Config(_env_file=None, **{"inner_llm_url": "http://gpu-a:8000", "llm_max_retries": 2, **settings})  # type: ignore[arg-type]
    return ModelClient(config, transport=server, sleep=clock.sleep, clock=clock)


def ask(**fields: Any) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": "hi"}], **fields)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeModelServer]:
    server = FakeModelServer().start()
    yield server
    server.stop()


def test_an_api_key_is_sent_as_a_bearer_token_and_a_urls_user_as_basic_auth(fake: FakeModelServer) -> None:
    port = fake.url.rsplit(":", 1)[1]
    for url, key, sent in [
        (fake.url, "sk-1", "Bearer sk-1"),
        (f"http://bob:p%40ss@127.0.0.1:{port}", None, "Basic " + base64.b64encode(b"bob:p@ss").decode()),
        (fake.url, None, None),
    ]:
        model = ModelClient(Config(_env_file=None, inner_llm_url=url, inner_llm_api_key=key, default_model="m"))  # type: ignore[call-arg]
        try:
            model.chat(ask())
        finally:
            model.close()
        assert fake.last_headers.get("authorization") == sent


def test_the_gateways_own_fields_are_never_taken_from_the_request_passed_on() -> None:
    server = Server()
    extra = {"model": "evil", "stream": False, "messages": [], "tools": [{"type": "function"}], "fallbacks": ["x"]}
    client(server, default_model="served-b").chat(ask(extra=extra, stop_words=["", "END"], tokens_limit=None))
    (sent,) = server.posts
    body = sent["body"]
    assert (sent["path"], body["model"], body["stream"]) == ("/v1/chat/completions", "served-b", True)
    assert body["messages"] == [{"role": "user", "content": "hi"}] and body["tools"] == [{"type": "function"}]
    assert body["stop"] == ["END"] and "max_tokens" not in body and "fallbacks" not in body
    assert body["stream_options"] == {"include_usage": True}
    assert "priority" not in body  # only to a server that schedules by it


def test_a_raw_completion_goes_to_completions_without_messages_and_a_priority_when_scheduled() -> None:
    server = Server()
    client(server, inner_llm_priority_scheduling=True).chat(
        ChatRequest(messages=[], extra={"prompt": "1, 2,"}, raw=True, priority=9)
    )
    (sent,) = server.posts
    assert sent["path"] == "/v1/completions" and "messages" not in sent["body"]
    assert sent["body"]["prompt"] == "1, 2," and sent["body"]["priority"] == 0  # vLLM: lower is sooner
    assert sent["body"]["model"] == "served-a"  # none configured: the first the server serves


def test_the_first_served_model_is_asked_once() -> None:
    server = Server()
    model = client(server)
    model.chat(ask())
    model.chat(ask())
    assert [sent["path"] for sent in server.sent].count("/v1/models") == 1


def test_the_workers_own_credentials_refused_are_not_retried_nor_the_callers_fault() -> None:
    clock = Clock()
    server = Server(error(401, "invalid api key"))
    with pytest.raises(ModelServerFailed) as failed:
        client(server, clock).chat(ask(model="m"))
    assert failed.value.status_code == 401 and "invalid api key" in failed.value.message
    assert len(server.posts) == 1 and clock.slept == []


def test_a_retry_after_is_honoured_up_to_a_minute() -> None:
    clock = Clock()
    server = Server(error(429, "busy", **{"Retry-After": "3600"}), error(503, "busy", **{"Retry-After": "2"}))
    assert client(server, clock, llm_deadline=7200).chat(ask(model="m")).content == "ok"
    assert clock.slept == [MAX_RETRY_AFTER, 2.0]


def test_a_stream_that_passed_pieces_on_is_not_asked_again() -> None:
    clock = Clock()
    server = Server(cut_off("Hel", "lo"))
    relayed: list[str] = []
    with pytest.raises(ModelServerFailed, match=r"ended before it was complete \(gave up after 1 attempt in"):
        client(server, clock).chat(ask(model="m"), on_delta=lambda i, text, extra: relayed.append(text))
    assert relayed == ["Hel", "lo"] and len(server.posts) == 1 and clock.slept == []
    # Without a reader, the same failure is tried again, and the whole answer returned.
    again = Server(cut_off("Hel"))
    assert client(again, Clock()).chat(ask(model="m")).content == "ok" and len(again.posts) == 2


def test_one_server_of_several_fails_at_once_for_the_pool_to_try_another() -> None:
    server = Server(error(502, "bad gateway"))
    with pytest.raises(ModelServerFailed) as failed:
        client(server, llm_max_retries=0).chat(ask(model="m"))
    assert failed.value.message == "model server answered 502: bad gateway"  # no "gave up after"
    assert failed.value.status_code == 502


def test_an_unreachable_server_is_named_without_its_address() -> None:
    server = Server(*[ConnectionRefusedError("connect to gpu-a:8000 refused")] * 3)
    with pytest.raises(ModelServerUnavailable) as failed:
        client(server, default_model="big").chat(ask())
    assert failed.value.message.startswith("model server unreachable (model 'big'): connect to <model server> refused")
    assert "gpu-a" not in failed.value.message and "gave up after 3 attempts" in failed.value.message


def test_a_connect_timeout_is_told_from_a_slow_answer() -> None:
    slow = Server(ConnectTimeout("no connection"), TimeoutError("timed out"), TimeoutError("timed out"))
    with pytest.raises(ModelServerTimeout, match="timed out trying to get an answer from the model server"):
        client(slow).chat(ask(model="m"))
    never = Server(*[ConnectTimeout("no connection")] * 3)
    with pytest.raises(ModelServerTimeout, match="timed out trying to connect to the model server"):
        client(never).chat(ask(model="m"))


def test_each_attempt_waits_no_longer_than_the_deadline_leaves() -> None:
    clock = Clock()
    server = Server(error(500, "oops"))
    model = client(server, clock, llm_timeout=600, llm_connect_timeout=5, llm_retry_backoff=1.0)
    model.chat(ask(model="m"), give_up_at=clock.now + 30)
    first, second = server.posts
    assert (first["timeout"], first["connect_timeout"]) == (30, 5)
    assert second["timeout"] == pytest.approx(30 - clock.slept[0])


def test_embeddings_are_asked_as_floats_for_the_default_model() -> None:
    server = Server(httpx.Response(200, json={"data": [{"index": 0, "embedding": [0.5]}], "model": "e"}))
    embedded = client(server, default_model="e5").embeddings(["hi"], {"dimensions": 1})
    (sent,) = server.posts
    assert sent["path"] == "/v1/embeddings"
    assert sent["body"] == {"dimensions": 1, "input": ["hi"], "encoding_format": "float", "model": "e5"}
    assert embedded.vectors == [[0.5]]


@pytest.mark.parametrize(
    ("answers", "verdict"),
    [
        ([httpx.Response(200)], None),
        ([httpx.Response(404), httpx.Response(200, json={"data": []})], None),  # a server without /health
        ([httpx.Response(503)], "/health answered 503"),
        ([httpx.Response(404), httpx.Response(404)], "/v1/models answered 404"),
        ([ConnectionRefusedError("refused")], "/health: refused"),
    ],
)
def test_a_probe_says_whether_a_down_server_answers_again(answers: list[Any], verdict: str | None) -> None:
    server = Server(*answers)
    assert client(server).probe(0.5) == verdict
    assert all(sent["method"] == "GET" and sent["timeout"] == 0.5 for sent in server.sent)


def anthropic_stream(text: str) -> httpx.Response:
    said = [
        {"type": "message_start", "message": {"model": "served", "usage": {"input_tokens": 2}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
        {"type": "message_stop"},
    ]
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in said)
    return httpx.Response(200, content=body.encode(), headers={"content-type": "text/event-stream"})


def test_a_messages_job_goes_to_the_servers_own_messages_api_only_where_it_serves_one() -> None:
    given = {"max_tokens": 50, "messages": [{"role": "user", "content": "hi"}], "system": "s"}
    native = Server(anthropic_stream("hello"))
    completion = client(native, default_model="served-b", inner_llm_messages_api=True).chat(
        ask(anthropic=given, tokens_limit=50)
    )
    (sent,) = native.posts
    assert sent["path"] == "/v1/messages" and sent["body"] == {**given, "model": "served-b", "stream": True}
    assert completion.content == "hello" and completion.choices[0]["finish_reason"] == "stop"
    # A server that does not serve it gets the translation; a job without it, as ever.
    for settings, request in (({}, ask(anthropic=given)), ({"inner_llm_messages_api": True}, ask())):
        server = Server()
        client(server, default_model="m", **settings).chat(request)
        assert server.posts[0]["path"] == "/v1/chat/completions"


def test_a_messages_job_over_the_context_is_fitted_only_where_the_server_tells_the_room() -> None:
    told = "This model's maximum context length is 2048 tokens and your request has 48 input tokens"
    server = Server(error(400, told), anthropic_stream("ok"))
    given = {"max_tokens": 4000, "messages": [{"role": "user", "content": "hi"}]}
    client(server, default_model="m", inner_llm_messages_api=True).chat(ask(anthropic=given, tokens_limit=4000))
    assert [post["body"]["max_tokens"] for post in server.posts] == [4000, 2000]
    # Untold, it is refused as the server refused it: Anthropic's max_tokens cannot be left out.
    untold = Server(error(400, "max_tokens is too large for the context window"))
    with pytest.raises(ModelServerRejected):
        client(untold, default_model="m", inner_llm_messages_api=True).chat(ask(anthropic=given, tokens_limit=4000))
    assert len(untold.posts) == 1
