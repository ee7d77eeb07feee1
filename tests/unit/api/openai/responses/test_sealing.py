"""Compaction items: what one tenant was given opens for it alone, and nothing altered,
forged or sealed under another secret opens at all (api/openai/responses/sealing.py)."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from api.errors import InvalidInput, Unavailable
from api.openai.responses.sealing import PREFIX, SUMMARY_PROMPT, Compacted, CompactionSeal
from shared.config import Config

pytestmark = pytest.mark.unit

SECRET = "s" * 40


def seal(secret: str | None = SECRET) -> CompactionSeal:
    return CompactionSeal(Config(_env_file=None, compaction_secret=secret))  # type: ignore[call-arg]


def test_a_sealed_summary_opens_for_its_tenant_and_reads_as_nothing_of_it() -> None:
    compacted = Compacted("the launch is on Tuesday", "fake-model", 1_700_000_000)
    content = seal().seal("research", compacted)
    assert content.startswith(PREFIX) and "Tuesday" not in content
    assert seal().open("research", content, "input[0]") == compacted  # another process, the same secret
    assert seal().seal("research", compacted) != content  # a fresh nonce each time


@pytest.mark.parametrize(
    "change",
    [
        lambda content: content[:-2] + ("A" if content[-2] != "A" else "B") + content[-1],  # a bit flipped
        lambda content: content.removeprefix(PREFIX),  # not ours
        lambda content: PREFIX + "!!!not base64",
        lambda content: PREFIX + base64.urlsafe_b64encode(b"short").decode(),
        lambda content: PREFIX,
    ],
)
def test_altered_or_forged_content_is_refused_naming_the_field(change: Callable[[str], str]) -> None:
    content = seal().seal("research", Compacted("x", "m", 1))
    with pytest.raises(InvalidInput, match=r"^input\[3\]\.encrypted_content: not a compaction item"):
        seal().open("research", change(content), "input[3]")


def test_another_tenants_item_or_another_secrets_is_refused_as_a_forged_one() -> None:
    content = seal().seal("research", Compacted("x", "m", 1))
    with pytest.raises(InvalidInput, match="not a compaction item"):
        seal().open("product", content, "input[0]")
    with pytest.raises(InvalidInput, match="not a compaction item"):
        seal("t" * 40).open("research", content, "input[0]")


def test_without_a_secret_compaction_is_unavailable_naming_the_setting() -> None:
    for secret in (None, ""):
        with pytest.raises(Unavailable, match="COMPACTION_SECRET"):
            seal(secret).require()
    with pytest.raises(ValueError, match="at least 32 characters"):
        seal("short")


def test_a_compaction_item_is_asked_as_the_turn_that_made_its_summary() -> None:
    sealer = seal()
    item = {"id": "cmp_1", "type": "compaction", "encrypted_content": sealer.seal("t", Compacted("S", "m", 1))}
    user = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "next"}]}
    asked = sealer.expanded("t", [item, user])
    assert [(m["role"], m["content"][0]["text"]) for m in asked] == [
        ("user", SUMMARY_PROMPT),
        ("assistant", "S"),
        ("user", "next"),
    ]
    # A bad item among the request's own is named by its place in the request's input.
    with pytest.raises(InvalidInput, match=r"^input\[0\]"):
        sealer.expanded("t", [user, {**item, "encrypted_content": PREFIX + "x"}], base=1)
