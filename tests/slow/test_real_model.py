"""The whole system on a real language model: SmolLM2-135M in the embedded llama.cpp server."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import redis

from shared.contract import whole_answer
from testing.fake_model_server import free_port
from testing.processes import ROOT, VENV_BIN, Process, Processes, wait_for_http
from tests.conftest import Stack, StackFactory

# One model server at a time: its threads take every core, and two (one per test
# process) slow each other several times over.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("real-model")]


@pytest.fixture(scope="session")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama.cpp's server (xllamacpp) on a free port, serving the default SmolLM2 model."""
    port = free_port()
    processes = Processes(tmp_path_factory.mktemp("model"))
    env = {"ENV_FILE": "", "EMBEDDED_MODEL_PORT": str(port), "MODEL_PARALLEL": "4", "CACHE_DIR": str(ROOT / ".cache")}
    process: Process = processes.spawn("model", [str(VENV_BIN / "python"), "-m", "local_stack.model_server"], env)
    url = f"http://127.0.0.1:{port}"
    wait_for_http(process, f"{url}/health", timeout=300)  # the first run fetches the model
    yield url
    processes.stop_all()


# On both brokers: a real answer and a batch. The rest is the model's behaviour through the
# gateway, the same on either: on the embedded Valkey alone, the broker `make run` uses.
ON_BOTH_BROKERS = ("test_generate_and_chat_answer_with_real_text", "test_a_batch_on_the_real_model")


@pytest.fixture
def real(
    make_stack: StackFactory, model_server: str, broker_env: dict[str, str], request: pytest.FixtureRequest
) -> Stack:
    if broker_env["RABBIT_MQ_HOST"] and request.node.originalname not in ON_BOTH_BROKERS:
        pytest.skip("once is enough: the model's behaviour through the gateway, on the run command's broker")
    return make_stack(INNER_LLM_URL=model_server, LLM_TIMEOUT="120")


def stored_result(stack: Stack, job_id: str) -> dict:
    config = stack.config
    raw = redis.Redis(host=config.redis_host, port=config.redis_port).get(config.keys.result(job_id))
    return whole_answer(json.loads(raw or b"{}")["result"])


def ask(stack: Stack, path: str, body: dict) -> str:
    answer = httpx.post(f"{stack.url}{path}", json=body, timeout=180)
    assert answer.status_code == 200, answer.text
    return answer.json()["content"]


def test_generate_and_chat_answer_with_real_text(real: Stack) -> None:
    text = ask(real, "/generate", {"content": "What is the capital of France?", "meta": {"tokens_limit": 40}})
    assert text.strip() and any(c.isalpha() for c in text)
    chat = ask(
        real,
        "/chat_completion",
        {
            "meta": {"tokens_limit": 40},
            "messages": [
                {"role": "system", "content": "You answer in one short sentence."},
                {"role": "user", "content": "Name a colour."},
            ],
        },
    )
    assert chat.strip() and any(c.isalpha() for c in chat)


def test_the_spec_defaults_are_answered(real: Stack) -> None:
    # tokens_limit 8096 is more than each slot's context (2048): fitted, not refused.
    assert ask(real, "/generate", {"content": "Say hello.", "meta": {"temperature": 0}}).strip()


def test_tokens_limit_bounds_the_answer(real: Stack) -> None:
    ask(
        real,
        "/generate",
        {"job_id": "short-1", "content": "Tell me a long story about a dragon.", "meta": {"tokens_limit": 5}},
    )
    result = stored_result(real, "short-1")
    assert result["usage"]["completion_tokens"] <= 5
    assert result["finish_reason"] == "length"


def test_temperature_zero_is_repeatable_and_a_stop_word_cuts(real: Stack) -> None:
    body = {"content": "List the days of the week.", "meta": {"temperature": 0, "tokens_limit": 60}}
    first = ask(real, "/generate", body)
    assert ask(real, "/generate", body) == first
    words = [w for w in first.split() if w.isalpha() and len(w) > 3]
    assert len(words) >= 3, first
    stop = words[len(words) // 2]
    cut = ask(real, "/generate", {**body, "meta": {**body["meta"], "stop_words": [stop]}})
    assert stop not in cut
    assert len(cut) < len(first)
    assert first.startswith(cut.rstrip())


def test_openai_client_on_the_real_model_streamed_and_not(real: Stack) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{real.url}/v1", api_key="unused", max_retries=0, timeout=120)
    ask = {
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": "Name three colours."}],
        "max_tokens": 24,
        "temperature": 0,
    }
    whole = client.chat.completions.create(**ask)
    assert whole.choices[0].message.content.strip()
    assert whole.usage is not None and 0 < whole.usage.completion_tokens <= 24
    pieces = [
        chunk.choices[0].delta.content
        for chunk in client.chat.completions.create(**ask, stream=True)
        if chunk.choices and chunk.choices[0].delta.content
    ]
    assert len(pieces) > 3  # token by token, not in one piece
    assert "".join(pieces) == whole.choices[0].message.content  # temperature 0: the same answer


def test_a_json_schema_is_enforced_by_the_real_model(real: Stack) -> None:
    # llama.cpp turns the schema into a grammar: whatever the small model says, it is JSON
    # of that shape. Through the queue: the response_format travels in the job.
    import openai

    client = openai.OpenAI(
        base_url=f"{real.url}/v1", api_key="unused", max_retries=0, timeout=120, _strict_response_validation=True
    )
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}, "count": {"type": "integer"}},
        "required": ["colour", "count"],
        "additionalProperties": False,
    }
    answer = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "Pick a colour and a number."}],
        response_format={"type": "json_schema", "json_schema": {"name": "pick", "schema": schema, "strict": True}},
        max_tokens=40,
        temperature=0,
    )
    picked = json.loads(answer.choices[0].message.content or "")
    assert set(picked) == {"colour", "count"}
    assert picked["colour"] in ("red", "green", "blue") and isinstance(picked["count"], int)


def test_a_raw_completion_on_the_real_model(real: Stack) -> None:
    # /v1/completions reaches llama.cpp's own: the prompt is continued, no chat template.
    import openai

    client = openai.OpenAI(base_url=f"{real.url}/v1", api_key="unused", max_retries=0, timeout=120)
    answer = client.completions.create(
        model="smollm2-135m-instruct", prompt=["1, 2, 3, 4,", "a, b, c, d,"], max_tokens=6, temperature=0
    )
    assert sorted(choice.index for choice in answer.choices) == [0, 1]
    assert all(choice.text.strip() for choice in answer.choices)


def test_a_batch_on_the_real_model(real: Stack) -> None:
    # OpenAI's Batch API end to end on llama.cpp: every line answered by the model, in
    # the input's order, with its usage; temperature 0 gives the interactive answer.
    import io
    import time

    import openai

    client = openai.OpenAI(
        base_url=f"{real.url}/v1", api_key="unused", max_retries=0, timeout=120, _strict_response_validation=True
    )
    body = {"model": "smollm2-135m-instruct", "max_tokens": 12, "temperature": 0}
    questions = ["Name a colour.", "What is 2 + 2?", "Say hello."]
    lines = [
        {"custom_id": f"q{n}", "method": "POST", "url": "/v1/chat/completions",
         "body": {**body, "messages": [{"role": "user", "content": q}]}}
        for n, q in enumerate(questions)
    ]  # fmt: skip
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    upload = client.files.create(file=("q.jsonl", io.BytesIO(content)), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="1h")
    deadline = time.monotonic() + 180
    while batch.status not in ("completed", "failed", "expired", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.5)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.output_file_id, batch
    output = [json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()]
    assert [line["custom_id"] for line in output] == ["q0", "q1", "q2"]
    answers = [openai.types.chat.ChatCompletion.model_validate(line["response"]["body"]) for line in output]
    assert all(a.choices[0].message.content and a.usage and a.usage.completion_tokens > 0 for a in answers)
    alone = client.chat.completions.create(**body, messages=[{"role": "user", "content": questions[1]}])
    assert alone.choices[0].message.content == answers[1].choices[0].message.content


def test_a_traced_job_on_the_real_model_says_where_its_time_went(make_stack: StackFactory, model_server: str) -> None:
    import openai

    from testing.otlp_collector import Collector

    collector = Collector()
    try:
        stack = make_stack(INNER_LLM_URL=model_server, LLM_TIMEOUT="120", WORKER_REPORT_SECONDS="0.5",
                           OTEL_EXPORTER_OTLP_ENDPOINT=collector.url, OTEL_BSP_SCHEDULE_DELAY="100")  # fmt: skip
        trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
        client = openai.OpenAI(
            base_url=f"{stack.url}/v1", api_key="unused", max_retries=0, timeout=120, _strict_response_validation=True,
            default_headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
        )  # fmt: skip
        raw = client.chat.completions.with_raw_response.create(
            model="smollm2-135m-instruct", messages=[{"role": "user", "content": "Count to ten."}], max_tokens=32
        )
        assert raw.parse().choices[0].message.content.strip()
        timing = {entry.split(";dur=")[0].strip(): float(entry.split(";dur=")[1])
                  for entry in raw.headers["server-timing"].split(",")}  # fmt: skip
        # A real model: it takes its time to the first token, and more to the end.
        assert 0 < timing["ttft"] < timing["model"] < timing["total"]
        spans = collector.wait_for(trace_id, "run/llm.chat", "POST /v1/chat/completions", "store result")
        call = next(s for s in spans if s.service == "llm-worker" and s.name == "POST /v1/chat/completions")
        assert call.events == ["first token"] and call.attributes["gen_ai.request.model"]
        # The worker's slots as it reports them (4 with the test's workers), none busy now.
        scaling = httpx.get(f"{stack.url}/scaling", timeout=10).json()["models"]["default"]
        assert scaling["workers"] == 1 and scaling["slots"] > 0 and scaling["waiting"] == 0
    finally:
        collector.stop()


def test_the_real_model_behind_two_servers_one_stopped_mid_run(
    make_stack: StackFactory, model_server: str, tmp_path_factory: pytest.TempPathFactory, broker_env: dict[str, str]
) -> None:
    import asyncio

    if not broker_env["RABBIT_MQ_HOST"]:
        pytest.skip("once is enough: the servers' pool is the same on either broker (tests/faults/test_servers.py)")

    from testing.load import Tally, wait_until

    port = free_port()
    processes = Processes(tmp_path_factory.mktemp("second-model"))
    env = {"ENV_FILE": "", "EMBEDDED_MODEL_PORT": str(port), "MODEL_PARALLEL": "2", "CACHE_DIR": str(ROOT / ".cache")}
    second = processes.spawn("model2", [str(VENV_BIN / "python"), "-m", "local_stack.model_server"], env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(second, f"{url}/health", timeout=300)
        stack = make_stack(INNER_LLM_URL=f"{model_server},{url}", INNER_LLM_SLOTS="2", LLM_TIMEOUT="120",
                           concurrency=8)  # fmt: skip
        tally = Tally()

        async def load() -> None:
            async with httpx.AsyncClient(base_url=stack.url, timeout=300) as client:

                async def one(n: int) -> None:
                    body = {"content": f"Name a colour. ({n})", "meta": {"tokens_limit": 12, "temperature": 0}}
                    tally.answers[str(n)] = await client.post("/generate", json=body)

                async def stop_second() -> None:
                    await asyncio.to_thread(wait_until, lambda: len(tally.answers) >= 3, 300, "three answers")
                    second.kill()  # stopped with calls in flight

                await asyncio.gather(*(one(n) for n in range(12)), stop_second())

        asyncio.run(load())
        statuses = {job: a.status_code for job, a in tally.answers.items() if isinstance(a, httpx.Response)}
        assert statuses == {str(n): 200 for n in range(12)}, {j: a for j, a in tally.answers.items()}
        contents = {j: a.json() for j, a in tally.answers.items() if isinstance(a, httpx.Response)}
        assert all(c["content"].strip() for c in contents.values()), contents
        servers = {
            s["name"]: s for s in httpx.get(f"{stack.url}/scaling", timeout=10).json()["models"]["default"]["servers"]
        }
        first, killed = servers[model_server.removeprefix("http://")], servers[f"127.0.0.1:{port}"]
        assert killed["state"] == "down"
        assert first["jobs"] + killed["jobs"] == 12  # each job answered once, by one server or the other
    finally:
        processes.stop_all()


def test_a_background_response_on_the_real_model_polled_then_its_stream_resumed(real: Stack) -> None:
    import time

    import openai

    client = openai.OpenAI(
        base_url=f"{real.url}/v1", api_key="unused", max_retries=0, timeout=120, _strict_response_validation=True
    )
    made = client.responses.create(
        model="smollm2-135m-instruct", input="Name three colours.", max_output_tokens=24, temperature=0,
        background=True,
    )  # fmt: skip
    assert made.status == "queued"
    deadline = time.monotonic() + 120
    done = client.responses.retrieve(made.id)
    while done.status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.2)
        done = client.responses.retrieve(made.id)
    assert done.status in ("completed", "incomplete") and done.output_text.strip()
    assert done.usage is not None and 0 < done.usage.output_tokens <= 24
    # Its stream, read in two goes: the events after the first five, then all of them.
    with client.responses.retrieve(made.id, stream=True) as stream:
        first = [event for _, event in zip(range(5), stream, strict=False)]
    rest = list(client.responses.retrieve(made.id, stream=True, starting_after=first[-1].sequence_number))
    whole = list(client.responses.retrieve(made.id, stream=True))
    assert [e.model_dump() for e in first + rest] == [e.model_dump() for e in whole]
    text = "".join(e.delta for e in whole if e.type == "response.output_text.delta")
    assert text == done.output_text


# The compliance suite's tests a 135M-parameter text model on these cores passes: not its
# tool call (the model does not call tools on request) nor its image input (a text-only
# model), and not the tests that wait on answers of the model's own length (the suite
# sets no max_output_tokens, and this model on two busy cores takes a minute or more
# for one: the suite's WebSocket tests give up first; they pass on the fake model server).
REAL_MODEL_CONFORMANCE = [
    "basic-response", "streaming-response", "multi-turn", "assistant-phase", "compact-response",
    "compact-missing-model", "websocket-previous-response-not-found",
]  # fmt: skip


def test_the_open_responses_compliance_suite_on_the_real_model(real: Stack) -> None:
    from testing.conformance import missing, run_suite

    why = missing()
    if why:
        pytest.skip(why)
    summary, outcomes = run_suite(f"{real.url}/v1", "unused", "smollm2-135m-instruct", only=REAL_MODEL_CONFORMANCE)
    failed = [f"{o.id} ({o.status}): " + "; ".join(o.errors)[:2000] for o in outcomes if o.status != "passed"]
    assert not failed, f"{summary['passed']} of {summary['total']} passed; failing:\n" + "\n".join(failed)
    assert sorted(o.id for o in outcomes) == sorted(REAL_MODEL_CONFORMANCE)


def test_anthropics_sdk_on_the_real_model_whole_streamed_and_counted(real: Stack) -> None:
    from testing.anthropic_sdk import client

    sdk = client(real, timeout=120)
    ask = {
        "model": "smollm2-135m-instruct",
        "system": "You answer briefly.",
        "messages": [{"role": "user", "content": "Name three colours."}],
        "max_tokens": 24,
        "extra_body": {"temperature": 0},
    }
    whole = sdk.messages.create(**ask)
    (said,) = whole.content
    assert said.type == "text" and said.text.strip() and whole.stop_reason in ("end_turn", "max_tokens")
    assert 0 < whole.usage.output_tokens <= 24 and whole.usage.input_tokens > 0
    with sdk.messages.stream(**ask) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 3  # token by token, not in one piece
    assert "".join(pieces) == said.text  # temperature 0: the same answer
    assert final.usage.output_tokens == whole.usage.output_tokens and final.stop_reason == whole.stop_reason
    # llama.cpp's own count (its template, then its tokenizer) of the same prompt.
    counted = sdk.messages.count_tokens(model=ask["model"], system=ask["system"], messages=ask["messages"])
    # Anthropic's input_tokens leave out what the server read from its prompt cache.
    assert counted.input_tokens == whole.usage.input_tokens + (whole.usage.cache_read_input_tokens or 0)
