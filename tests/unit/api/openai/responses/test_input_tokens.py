"""The token counter against model servers made of functions (httpx.MockTransport):
what each kind is asked, and how each way of failing is answered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest
from pydantic import SecretStr

from api.errors import (
    ModelNotFound,
    ModelServerRefused,
    ModelServerUnanswered,
    NotServedByModelServer,
    TooManyRequests,
)
from api.openai.responses.input_tokens import TokenCounter
from shared.config import Config
from shared.registry import Model, Server

pytestmark = pytest.mark.unit

CHAT = [{"role": "user", "content": "hello there"}]
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def model(*urls: str) -> Model:
    servers = tuple(Server(f"gpu-{n}:8000", url, api_key=SecretStr("k")) for n, url in enumerate(urls))
    return Model("small", urls[0], "q", servers=servers)


def counter(answer: Callable[[httpx.Request], httpx.Response], seen: list[httpx.Request]) -> TokenCounter:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    return TokenCounter(Config(_env_file=None), httpx.AsyncClient(transport=httpx.MockTransport(handle)))  # type: ignore[call-arg]


def count(tokens: TokenCounter, of: Model, served: str | None = "served-name") -> int:
    return asyncio.run(tokens.count("alpha", of, served, CHAT, TOOLS))


def test_vllm_is_asked_the_chat_with_its_tools_and_the_generation_prompt() -> None:
    seen: list[httpx.Request] = []
    tokens = counter(lambda _: httpx.Response(200, json={"count": 17, "max_model_len": 4096, "tokens": [1] * 17}), seen)
    assert count(tokens, model("http://a")) == 17
    (asked,) = seen
    assert (asked.url.path, asked.headers["authorization"]) == ("/tokenize", "Bearer k")
    assert json.loads(asked.content) == {"model": "served-name", "messages": CHAT, "tools": TOOLS,
                                         "add_generation_prompt": True}  # fmt: skip


def test_llama_cpp_is_asked_its_template_then_that_prompt_and_remembered() -> None:
    def llama(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path == "/apply-template":
            return httpx.Response(200, json={"prompt": "<s>user hello there"})
        return httpx.Response(200, json={"tokens": [9] * len(body["content"].split()) if "content" in body else []})

    seen: list[httpx.Request] = []
    tokens = counter(llama, seen)
    assert count(tokens, model("http://a")) == 3
    assert [r.url.path for r in seen] == ["/tokenize", "/apply-template", "/tokenize"]
    assert json.loads(seen[1].content) == {"messages": CHAT, "tools": TOOLS}
    assert json.loads(seen[2].content) == {"content": "<s>user hello there", "add_special": True, "parse_special": True}
    seen.clear()
    assert count(tokens, model("http://a")) == 3
    assert [r.url.path for r in seen] == ["/apply-template", "/tokenize"]


def test_the_next_server_counts_when_one_is_down_and_none_is_named_by_its_address() -> None:
    def first_down(request: httpx.Request) -> httpx.Response:
        if request.url.host == "down":
            raise httpx.ConnectError("connection refused to down:8000")
        return httpx.Response(200, json={"count": 5, "max_model_len": 1, "tokens": [0] * 5})

    seen: list[httpx.Request] = []
    assert count(counter(first_down, seen), model("http://down", "http://up")) == 5
    with pytest.raises(ModelServerUnanswered) as failed:
        count(counter(first_down, []), model("http://down", "http://down"))
    assert "'small'" in failed.value.message and "ConnectError" in failed.value.message
    assert "down" not in failed.value.message.replace("ConnectError", "") and "gpu-" not in failed.value.message


@pytest.mark.parametrize(
    ("status", "body", "raised"),
    [
        (404, {"detail": "Not Found"}, NotServedByModelServer),  # Ollama, TGI: no /tokenize
        (405, "Method Not Allowed", NotServedByModelServer),
        (404, {"object": "error", "message": "The model `served-name` does not exist.", "code": 404}, ModelNotFound),
        (400, {"object": "error", "message": "this model has no chat template", "code": 400}, ModelServerRefused),
        (500, {"error": {"message": "CUDA out of memory"}}, ModelServerUnanswered),
        (200, "not json", ModelServerUnanswered),
        (200, {"tokens": "many"}, ModelServerUnanswered),
    ],
)
def test_each_way_of_failing_is_its_own_answer(status: int, body: object, raised: type[Exception]) -> None:
    def answer(_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body) if not isinstance(body, str) else httpx.Response(status, text=body)

    with pytest.raises(raised) as failed:
        count(counter(answer, []), model("http://a"))
    assert "'small'" in str(failed.value)
    if raised in (ModelNotFound, ModelServerRefused):  # the server's own words, for the client to act on
        assert str((body or {}).get("message")) in str(failed.value)  # type: ignore[union-attr]


def test_a_tenant_has_at_most_its_bound_of_counts_asked_at_once_and_another_tenant_none_of_its() -> None:
    async def run() -> None:
        release = asyncio.Event()
        asked: asyncio.Queue[str] = asyncio.Queue()

        async def held(request: httpx.Request) -> httpx.Response:
            await asked.put(json.loads(request.content)["messages"][0]["content"])
            await release.wait()
            return httpx.Response(200, json={"count": 2, "max_model_len": 9, "tokens": [0, 0]})

        config = Config(_env_file=None, token_counts_per_tenant=2)  # type: ignore[call-arg]
        tokens = TokenCounter(config, httpx.AsyncClient(transport=httpx.MockTransport(held)))
        of = model("http://a")

        def ask(tenant: str) -> asyncio.Task[int]:
            chat = [{"role": "user", "content": tenant}]
            return asyncio.create_task(tokens.count(tenant, of, None, chat, None))

        hostile = [ask("hostile") for _ in range(2)]
        assert [await asked.get(), await asked.get()] == ["hostile", "hostile"]
        with pytest.raises(TooManyRequests, match=r"token_counts_in_flight: tenant 'hostile' .* at most 2"):
            await tokens.count("hostile", of, None, CHAT, None)
        normal = ask("normal")  # another tenant's count is asked at once
        assert await asked.get() == "normal"
        assert asked.empty()  # the refused one never reached the server
        release.set()
        assert [await task for task in (*hostile, normal)] == [2, 2, 2]
        assert await ask("hostile") == 2  # its places came back when answered
        assert tokens._counting == {}

    asyncio.run(run())
