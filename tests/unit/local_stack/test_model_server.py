"""The embedded llama.cpp server's parameters, as the local stack's settings give them."""

from __future__ import annotations

from pathlib import Path

import pytest
import xllamacpp

from local_stack.model_file import MODEL_ALIAS
from local_stack.model_server import server_params
from local_stack.settings import LocalStack

pytestmark = pytest.mark.unit


def test_the_default_model_is_served_on_loopback_with_each_slot_its_context_and_embeddings() -> None:
    local = LocalStack(_env_file=None, model_parallel=4, model_context=1024, embedded_model_port=8700)  # type: ignore[call-arg]
    params = server_params(local, Path("/cache/models/SmolLM2.gguf"))
    assert params.model.path == "/cache/models/SmolLM2.gguf" and params.model_alias == {MODEL_ALIAS}
    assert (params.n_parallel, params.n_ctx, params.cont_batching) == (4, 4 * 1024, True)
    assert (params.port, params.hostnames) == (8700, ["127.0.0.1"])
    assert params.n_threads_http >= params.n_parallel  # a request per slot is read while the others decode
    assert params.embedding and params.pooling_type == xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN


def test_a_model_of_ones_own_is_served_by_its_files_name_and_embeddings_may_be_off() -> None:
    local = LocalStack(_env_file=None, model_path="/models/qwen-0.5b.gguf", model_embeddings=False)  # type: ignore[call-arg]
    params = server_params(local, Path(local.model_path))
    assert params.model_alias == {"qwen-0.5b"} and not params.embedding
