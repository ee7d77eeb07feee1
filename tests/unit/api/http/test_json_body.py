"""Reading JSON the gateway can carry (api/http/json_body.py): each value it cannot, named."""

from __future__ import annotations

import json

import pytest

from api.errors import InvalidJson
from api.http.json_body import loads
from api.http.statuses import status_of

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        (b'{"meta": {"temperature": NaN}}', "body.meta.temperature: NaN is not a finite number"),
        (b'{"meta": {"temperature": -Infinity}}', "body.meta.temperature: -Infinity is not a finite number"),
        (b'{"meta": {"tokens_limit": 1e309}}', "body.meta.tokens_limit: 1e309 is not a finite number"),
        (b'{"messages": [{"content": "\\udfff"}]}', "body.messages.0.content: holds a lone UTF-16 surrogate"),
        (b'{"a": "\\ude00\\ud83d"}', "body.a: holds a lone UTF-16 surrogate"),  # a pair in the wrong order
        (b'{"\\ud800": 1}', "body: a key holds a lone UTF-16 surrogate"),
        (b'{"a": ' + b"[" * 65 + b"]" * 65 + b"}", "nested deeper than 64 levels (MAX_JSON_DEPTH)"),
        (b"[" * 100_000 + b"]" * 100_000, "body: nested deeper than 64 levels"),
    ],
)
def test_what_text_or_a_double_cannot_hold_is_named(raw: bytes, named: str) -> None:
    with pytest.raises(InvalidJson) as refused:
        loads(raw, 64)
    assert status_of(refused.value) == 422 and named in refused.value.message


def test_what_the_gateway_carries_reads_as_json_does() -> None:
    for raw in (
        b'{"content": "\\ud83d\\ude00", "meta": {"temperature": 0.5, "tokens_limit": 10}}',
        b'{"a": ' + b"[" * 63 + b"]" * 63 + b"}",
        b'{"b": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}',
        b"1.7976931348623157e308",
        '{"c": "caf\u00e9 \u4e2d"}'.encode(),
    ):
        assert loads(raw, 64) == json.loads(raw)


def test_malformed_json_is_json_s_own_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        loads(b'{"content": ', 64)


def test_a_batch_line_names_its_fields_from_the_top() -> None:
    with pytest.raises(InvalidJson) as refused:
        loads(b'{"custom_id": "\\udfff"}', 64, where="")
    assert refused.value.message.startswith("custom_id: holds a lone")
