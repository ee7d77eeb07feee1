"""Anthropic's messages and chat completions both ways (api/anthropic/messages/translate.py):
every block a client sends made what a chat-completions server reads (or refused naming
the block), and a chat answer made Anthropic's message."""

from __future__ import annotations

from typing import Any

import pytest

from api.anthropic.messages.translate import (
    chat_request,
    message_object,
    messages_job,
    stop_reason,
    tool_input,
    usage,
)
from api.anthropic.messages.types import CountTokensRequest, MessagesRequest
from api.errors import InvalidInput

pytestmark = pytest.mark.unit


def body(messages: list[dict[str, Any]], **fields: Any) -> MessagesRequest:
    return MessagesRequest.model_validate({"model": "m", "max_tokens": 100, "messages": messages, **fields})


def sent(messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return chat_request(body(messages, **fields))


def test_a_system_prompts_text_blocks_are_one_system_message_without_claude_codes_billing_hash() -> None:
    system = [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2; cch=93ab1;"},
        {"type": "text", "text": "You are a CLI.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Be brief."},
    ]
    messages = sent([{"role": "user", "content": "hi"}], system=system)["messages"]
    assert messages == [{"role": "system", "content": "You are a CLI.\n\nBe brief."}, {"role": "user", "content": "hi"}]
    assert sent([{"role": "user", "content": "hi"}], system="Hi.")["messages"][0] == {
        "role": "system",
        "content": "Hi.",
    }
    with pytest.raises(InvalidInput, match=r"^system.0.type: a text block"):
        sent([{"role": "user", "content": "hi"}], system=[{"type": "image"}])


def test_system_messages_among_the_others_join_the_system_prompt_as_claude_code_sends_them() -> None:
    messages = sent(
        [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "Agents: Explore."},
            {"role": "assistant", "content": "Hello."},
            {"role": "system", "content": [{"type": "text", "text": "Be terse."}]},
        ],
        system="You are a CLI.",
    )
    # One system message, first: most chat templates take it nowhere else.
    assert messages["messages"] == [
        {"role": "system", "content": "You are a CLI.\n\nAgents: Explore.\n\nBe terse."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello."},
    ]
    # The last message that is not the system's is the assistant's: a prefill.
    assert messages["continue_final_message"] is True
    with pytest.raises(InvalidInput, match=r"^messages: at least one user or assistant message"):
        sent([{"role": "system", "content": "alone"}])
    with pytest.raises(InvalidInput, match=r"^messages.0.content.0.type: a text block"):
        sent([{"role": "system", "content": [{"type": "image"}]}, {"role": "user", "content": "x"}])


def test_tool_uses_and_results_are_tool_calls_and_tool_messages_in_the_order_a_server_takes() -> None:
    use = {"type": "tool_use", "id": "toolu_1", "name": "ls", "input": {"path": "/"}}
    messages = sent(
        [
            {"role": "user", "content": "list"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": "Listing."},
                    use,
                    {"type": "tool_use", "id": "toolu_2", "name": "pwd"},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "and after that?"},
                    {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True, "content": "denied"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": [
                            {"type": "text", "text": "/home"},
                            {"type": "image", "source": {"type": "url", "url": "https://x/shot.png"}},
                        ],
                    },
                ],
            },
        ]
    )["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": "Listing.",
        "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "ls", "arguments": '{"path": "/"}'}},
            {"id": "toolu_2", "type": "function", "function": {"name": "pwd", "arguments": "{}"}},
        ],
    }
    # The tool messages follow the calls at once; the user's own text (and the results' images) after.
    assert messages[2:] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: denied"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "/home"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "https://x/shot.png"}},
                {"type": "text", "text": "and after that?"},
            ],
        },
    ]


def test_an_assistant_turn_of_calls_alone_has_no_content_and_a_last_one_of_text_is_a_prefill() -> None:
    calls_only = sent(
        [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
        ]
    )
    assert calls_only["messages"][1]["content"] is None and "continue_final_message" not in calls_only
    prefill = sent([{"role": "user", "content": "Pick A or B."}, {"role": "assistant", "content": "The answer is ("}])
    assert prefill["messages"][-1] == {"role": "assistant", "content": "The answer is ("}
    assert prefill["continue_final_message"] is True and prefill["add_generation_prompt"] is False


def test_documents_are_text_or_file_parts() -> None:
    content = [
        {
            "type": "document",
            "source": {
                "type": "content",
                "content": [
                    {"type": "text", "text": "page 1"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"}},
                ],
            },
        },
        {
            "type": "document",
            "title": "Q3.pdf",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
        },
        {"type": "document", "source": {"type": "content", "content": "plain"}},
    ]
    (user,) = sent([{"role": "user", "content": content}])["messages"]
    assert user["content"] == [
        {"type": "text", "text": "page 1"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}},
        {"type": "file", "file": {"filename": "Q3.pdf", "file_data": "data:application/pdf;base64,JVBE"}},
        {"type": "text", "text": "plain"},
    ]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ([{"type": "video"}], r"^messages.0.content.0.type: 'video' is not served"),
        ([{"text": "x"}], r"^messages.0.content.0: a content block with its type"),
        ([{"type": "text", "text": 5}], r"^messages.0.content.0.text: a string"),
        ([{"type": "image", "source": {"type": "file", "file_id": "f"}}], r"^messages.0.content.0.source.type:"),
        ([{"type": "image", "source": {"type": "base64", "data": "x"}}], r"^messages.0.content.0.source.media_type:"),
        ([{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}], r"by URL or file id"),
        ([{"type": "tool_use", "id": "t", "name": "f", "input": {}}], r"tool_use blocks are the assistant's"),
        ([{"type": "tool_result", "content": "x"}], r"^messages.0.content.0.tool_use_id:"),
        ([{"type": "tool_result", "tool_use_id": "t", "content": 5}], r"^messages.0.content.0.content:"),
    ],
)
def test_a_block_that_cannot_be_sent_is_refused_naming_it(content: list[Any], says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        sent([{"role": "user", "content": content}])


def test_an_assistants_blocks_are_its_own() -> None:
    for block, says in (
        ({"type": "tool_result", "tool_use_id": "t"}, "tool_result blocks are the user's"),
        ({"type": "image", "source": {}}, "not 'image'"),
        ({"type": "tool_use", "id": "t", "name": "f", "input": [1]}, r"^messages.1.content.0.input: an object"),
    ):
        with pytest.raises(InvalidInput, match=says):
            sent([{"role": "user", "content": "x"}, {"role": "assistant", "content": [block]}])


def test_tools_are_functions_and_anthropics_server_tools_are_refused() -> None:
    tools = [
        {"name": "ls", "description": "List", "input_schema": {"type": "object"}, "cache_control": {"type": "x"}},
        {"name": "pwd", "type": "custom", "input_schema": {"type": "object"}},
    ]
    request = sent([{"role": "user", "content": "x"}], tools=tools, tool_choice={"type": "any"})
    assert request["tools"] == [
        {"type": "function", "function": {"name": "ls", "parameters": {"type": "object"}, "description": "List"}},
        {"type": "function", "function": {"name": "pwd", "parameters": {"type": "object"}}},
    ]
    assert request["tool_choice"] == "required" and "parallel_tool_calls" not in request
    # A tool choice without tools is not sent (vLLM refuses one).
    assert "tool_choice" not in sent([{"role": "user", "content": "x"}], tool_choice={"type": "auto"})
    with pytest.raises(InvalidInput, match=r"^tools.0.type: 'web_search_20250305' is one of Anthropic's server tools"):
        sent([{"role": "user", "content": "x"}], tools=[{"type": "web_search_20250305", "name": "web_search"}])
    with pytest.raises(InvalidInput, match=r"^tools.0.input_schema:"):
        sent([{"role": "user", "content": "x"}], tools=[{"name": "f"}])


def test_a_jobs_meta_carries_the_limit_sampling_and_stops_and_the_chat_request_the_rest() -> None:
    job = messages_job(
        body(
            [{"role": "user", "content": "x"}],
            temperature=0.3,
            top_p=0.5,
            top_k=7,
            stop_sequences=["END"],
            metadata={"user_id": "u1"},
            priority=7,
            thinking={"type": "enabled", "budget_tokens": 50},
            chat_template_kwargs={"thinking": False},
            output_config={"effort": "max", "format": {"type": "json_schema", "schema": {}}},
        )
    )
    assert job["meta"] == {
        "temperature": 0.3,
        "tokens_limit": 100,
        "stop_words": ["END"],
        "model": "m",
        "priority": 7,
        "sampling": {"top_p": 0.5},
    }
    request = job["openai"]
    assert request["user"] == "u1" and request["top_k"] == 7 and request["reasoning_effort"] == "high"
    assert request["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": {}}}
    # Thinking asked of the template; the client's own kwargs win.
    assert request["chat_template_kwargs"] == {"enable_thinking": True, "thinking": False}
    plain = messages_job(body([{"role": "user", "content": "x"}]))
    assert plain["meta"]["temperature_unset"] is True and set(plain["openai"]) == {"messages"}
    with pytest.raises(InvalidInput, match=r"^thinking.budget_tokens: 100; it must be less than max_tokens"):
        messages_job(body([{"role": "user", "content": "x"}], thinking={"type": "enabled", "budget_tokens": 100}))


def test_a_token_count_is_asked_of_the_same_prompt_a_message_sends() -> None:
    given = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "system": "s",
        "max_tokens": 5,
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "thinking": {"type": "adaptive"},
    }
    counted = chat_request(CountTokensRequest.model_validate(given))
    assert counted == chat_request(MessagesRequest.model_validate(given))
    assert counted["chat_template_kwargs"] == {"enable_thinking": True, "thinking": True}


CALL = {"id": "call_9", "type": "function", "function": {"name": "ls", "arguments": '{"path": "/"}'}}


def test_a_chat_answer_is_anthropics_message_thinking_text_then_tool_uses() -> None:
    answer = {
        "content": "Sure.",
        "usage": {"prompt_tokens": 10, "completion_tokens": 4},
        "choices": [
            {
                "index": 0,
                "content": "Sure.",
                "finish_reason": "tool_calls",
                "reasoning_content": "hm",
                "tool_calls": [CALL, {"function": {"name": "pwd"}}],
            }
        ],
    }
    message = message_object("j1", answer, "m", None)
    assert message == {
        "id": "msg_j1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [
            {"type": "thinking", "thinking": "hm", "signature": ""},
            {"type": "text", "text": "Sure."},
            {"type": "tool_use", "id": "call_9", "name": "ls", "input": {"path": "/"}},
            {"type": "tool_use", "id": "toolu_j1_1", "name": "pwd", "input": {}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 4,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
    # Nothing said at all: one empty text block (a client reading content[0] finds it).
    empty = message_object("j2", {"content": "", "finish_reason": "length"}, "m", None)
    assert empty["content"] == [{"type": "text", "text": ""}] and empty["stop_reason"] == "max_tokens"


@pytest.mark.parametrize(
    ("choice", "stops", "said"),
    [
        ({"finish_reason": "stop"}, None, ("end_turn", None)),
        ({"finish_reason": None}, None, ("end_turn", None)),
        ({"finish_reason": "stop", "stop_reason": "END"}, ["END"], ("stop_sequence", "END")),
        ({"finish_reason": "stop", "stop_reason": "</s>"}, ["END"], ("end_turn", None)),  # not one asked for
        ({"finish_reason": "length"}, None, ("max_tokens", None)),
        ({"finish_reason": "content_filter"}, None, ("refusal", None)),
        ({"finish_reason": "stop", "tool_calls": [CALL]}, None, ("tool_use", None)),
        ({"finish_reason": "length", "tool_calls": [CALL]}, None, ("max_tokens", None)),
        ({"finish_reason": "abort"}, None, ("end_turn", None)),
    ],
)
def test_the_finish_reason_is_anthropics_stop_reason(
    choice: dict[str, Any], stops: list[str] | None, said: tuple[str, str | None]
) -> None:
    assert stop_reason(choice, stops) == said


def test_a_calls_arguments_are_its_input_an_object_always() -> None:
    assert tool_input('{"a": 1}') == {"a": 1} and tool_input({"a": 1}) == {"a": 1}
    assert tool_input("") == {} and tool_input(None) == {} and tool_input("[1]") == {} and tool_input("{oops") == {}


def test_usage_counts_the_servers_cached_prompt_tokens_as_cache_reads() -> None:
    used = {"prompt_tokens": 100, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 64}}
    assert usage({"usage": used}) == {
        "input_tokens": 36,
        "output_tokens": 5,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 64,
    }
    assert usage({"usage": None})["input_tokens"] == 0 and usage({})["output_tokens"] == 0
