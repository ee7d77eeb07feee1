"""Bodies LangChain's OpenAIEmbeddings (embed_documents of 1,000 texts: token ids, as
tiktoken cut them, in one request) and LlamaIndex's OpenAIEmbedding (batches of 100
texts) send to /v1/embeddings, recorded in tests/fixtures/embedding_clients/ by the
script there, sent through the real pipeline as recorded; each answer has one vector
per input, in order, the one the model server gave for it."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import httpx
import pytest

from testing.fake_model_server import FakeModelServer, fake_vector
from testing.processes import ROOT
from tests.conftest import Stack

pytestmark = pytest.mark.integration

FIXTURES = ROOT / "tests" / "fixtures" / "embedding_clients"
RECORDED = {path.stem: json.loads(path.read_text()) for path in sorted(FIXTURES.glob("*.json"))}


def vectors(answer: dict[str, Any]) -> list[list[float]]:
    out = []
    for item in answer["data"]:
        packed = base64.b64decode(item["embedding"])
        out.append(list(struct.unpack(f"<{len(packed) // 4}f", packed)))
    return out


def test_the_recordings_are_the_clients_own() -> None:
    clients = {record["client"].split()[0] for record in RECORDED.values()}
    assert clients == {"langchain-openai", "llama-index-embeddings-openai"}
    documents = RECORDED["langchain_embed_documents"]["requests"]
    assert len(documents) == 1 and len(documents[0]["body"]["input"]) == 1000
    assert all(isinstance(ids, list) and all(isinstance(t, int) for t in ids) for ids in documents[0]["body"]["input"])


@pytest.mark.parametrize(
    "name", ["langchain_embed_documents", "langchain_embed_query", "llamaindex_text_embedding_batch"]
)
def test_recorded_embedding_requests_are_answered(stack_once: Stack, fake: FakeModelServer, name: str) -> None:
    for request in RECORDED[name]["requests"]:
        body = request["body"]
        answer = httpx.post(f"{stack_once.url}{request['path']}", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        got = answer.json()
        assert got["object"] == "list" and [d["index"] for d in got["data"]] == list(range(len(body["input"])))
        for vector, given in zip(vectors(got), body["input"], strict=True):
            assert all(abs(a - b) < 1e-6 for a, b in zip(vector, fake_vector(given, 8), strict=True))
        assert got["usage"]["prompt_tokens"] > 0
