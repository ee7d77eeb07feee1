"""Embeddings' work (api/openai/embeddings/serving.py): a request made an ``llm.embed``
job, its model's alone, and the worker's packed vectors as OpenAI's list of embeddings;
on the real job parts over a fake Redis and broker (tests/unit/api/edge.py)."""

from __future__ import annotations

import asyncio
import json

import pytest

from api.errors import InvalidInput
from api.observability.server_timing import Timing
from api.openai.embeddings.serving import Embeddings, embedding_answer, embedding_job
from api.openai.embeddings.types import EmbeddingsRequest
from shared.contract.embeddings import pack_vector
from shared.tenants import Tenant
from tests.unit.api.edge import config, running_parts

pytestmark = pytest.mark.unit

MODELS = json.dumps({"models": [{"name": "e5", "url": "http://a:1"}, {"name": "bge", "url": "http://b:1"}]})


def test_a_request_is_an_embed_job_with_its_inputs_as_a_list_and_the_servers_own_fields() -> None:
    job = embedding_job(EmbeddingsRequest.model_validate({"input": "hi", "model": "e5", "dimensions": 64,
                                                          "truncate_prompt_tokens": 8}))  # fmt: skip
    assert job == {"meta": {"model": "e5", "priority": 5},
                   "embed": {"input": ["hi"], "dimensions": 64, "truncate_prompt_tokens": 8}}  # fmt: skip
    assert embedding_job(EmbeddingsRequest(input=[1, 2, 3]))["embed"]["input"] == [[1, 2, 3]]


def test_the_vectors_come_back_in_the_inputs_order_as_floats_or_as_sent() -> None:
    packed = [pack_vector([0.5, -1.0]), pack_vector([2.0])]
    result = {"embeddings": packed, "usage": {"prompt_tokens": 4}, "model": "e5"}
    floats = embedding_answer(result, "float", None)
    assert [item["embedding"] for item in floats["data"]] == [[0.5, -1.0], [2.0]]
    assert [item["index"] for item in floats["data"]] == [0, 1]
    assert floats["usage"] == {"prompt_tokens": 4, "total_tokens": 4} and floats["model"] == "e5"
    assert [item["embedding"] for item in embedding_answer(result, "base64", None)["data"]] == packed


def test_an_embedding_is_run_on_its_model_and_another_models_vectors_never_stand_in() -> None:
    async def main() -> None:
        async with running_parts(config(models=MODELS, queue_name="q")) as parts:
            parts.answer_every_job(lambda sent: {"embeddings": [pack_vector([1.0])], "usage": {"prompt_tokens": 1}})
            embedder = Embeddings(parts.config, parts.routing, parts.runner)
            answer = await embedder.embed(Tenant("default"), "e-1", EmbeddingsRequest(input="x", model="bge"),
                                          Timing(0.0))  # fmt: skip
            assert answer["data"][0]["embedding"] == [1.0] and answer["model"] == "bge"
            (sent,) = parts.broker.sent
            assert (sent.name, sent.queue) == ("llm.embed", "q.bge") and "fallbacks" not in sent.job
            with pytest.raises(InvalidInput, match="fallbacks: an embedding is its model's alone"):
                await embedder.embed(Tenant("default"), "e-2", EmbeddingsRequest(input="x", fallbacks=["bge"]),
                                     Timing(0.0))  # fmt: skip
            assert len(parts.broker.sent) == 1

    asyncio.run(main())
