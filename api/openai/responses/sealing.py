"""A compacted conversation sealed into a compaction item's ``encrypted_content``, and opened
again when the item comes back as input.

The content is the model's summary of the conversation, encrypted and authenticated
with AES-256-GCM under a key derived from ``COMPACTION_SECRET``, the tenant's name bound
in as associated data: a client can neither read it, alter it, nor forge one, and an item
one tenant was given does not open for another (it is refused as an altered one). Every
API process opens what any of them sealed, with the same secret.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from api.errors import InvalidInput, Unavailable
from shared.config import Config

PREFIX = "llmapi-cmp1."  # the format's version: a later one opens what this one sealed, or says so
NONCE_BYTES = 12
# What a compacted conversation is replaced with when the model is asked: the question the
# summary answered, then the summary (a user turn and the assistant's, as it was made).
SUMMARY_PROMPT = (
    "Summarize the conversation so far for your own later use: the facts, names, numbers,"
    " decisions, open questions and what was asked of you. Write only the summary."
)


@dataclass(frozen=True)
class Compacted:
    """What a compaction item holds: the model's summary of a conversation."""

    summary: str
    model: str
    created_at: int


class CompactionSeal:
    """Seals a tenant's compacted conversation into an item's content and opens it again."""

    def __init__(self, config: Config) -> None:
        secret = config.compaction_secret
        self._aead: AESGCM | None = None
        if secret is not None:
            key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"llm-api compaction v1").derive(
                secret.get_secret_value().encode()
            )
            self._aead = AESGCM(key)

    def require(self) -> None:
        """Raise Unavailable (503, naming COMPACTION_SECRET) unless compaction is configured."""
        self._cipher()

    def _cipher(self) -> AESGCM:
        if self._aead is None:
            raise Unavailable("compaction is not configured: set COMPACTION_SECRET (docs/configuration.md)")
        return self._aead

    def seal(self, tenant: str, compacted: Compacted) -> str:
        """The `encrypted_content` of `tenant`'s compaction item holding `compacted`."""
        plain = json.dumps(
            {"summary": compacted.summary, "model": compacted.model, "created_at": compacted.created_at},
            separators=(",", ":"),
        ).encode()
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._cipher().encrypt(nonce, plain, _bound(tenant))
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def open(self, tenant: str, content: str, where: str) -> Compacted:
        """What `tenant`'s item holds; InvalidInput naming `where` for content this gateway did
        not seal for this tenant (altered, forged, another tenant's, another secret's)."""
        cipher = self._cipher()
        refused = InvalidInput(
            f"{where}.encrypted_content: not a compaction item of this gateway for this API key's tenant"
            " (altered, or sealed under another COMPACTION_SECRET): compact the conversation again"
        )
        if not content.startswith(PREFIX):
            raise refused
        body = content[len(PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            raise refused from None
        if len(raw) <= NONCE_BYTES:
            raise refused
        try:
            plain = cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _bound(tenant))
        except InvalidTag:
            raise refused from None
        held: dict[str, Any] = json.loads(plain)
        return Compacted(held["summary"], held["model"], held["created_at"])

    def expanded(self, tenant: str, items: list[dict[str, Any]], base: int = 0) -> list[dict[str, Any]]:
        """`items` as the model is asked them: each compaction item opened into the turn
        that made its summary (the question asked, the summary answered). `base` is the
        place of the request's own first item among `items` (its earlier ones: history)."""
        out: list[dict[str, Any]] = []
        for n, item in enumerate(items):
            if item["type"] != "compaction":
                out.append(item)
                continue
            where = f"input[{n - base}]" if n >= base else "previous_response_id"
            summary = self.open(tenant, item["encrypted_content"], where).summary
            out.append({"type": "message", "role": "user", "content": [{"type": "input_text", "text": SUMMARY_PROMPT}]})
            out.append({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": summary}]})
        return out


def _bound(tenant: str) -> bytes:
    """The associated data an item is sealed with: whose it is."""
    return f"compaction|{tenant}".encode()
