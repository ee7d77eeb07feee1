"""llama.cpp's OpenAI-compatible server, in process through xllamacpp (no compiler needed).

Serves ``MODEL_PATH`` (or the default SmolLM2 model) on ``EMBEDDED_MODEL_PORT`` with
``MODEL_PARALLEL`` slots decoded together (continuous batching); with
``MODEL_EMBEDDINGS`` (the default), ``/v1/embeddings`` too: the model's hidden states,
mean-pooled and normalized.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import xllamacpp

from local_stack.model_file import MODEL_ALIAS, ensure_default_model
from local_stack.settings import LocalStack


def server_params(local: LocalStack, path: Path) -> xllamacpp.CommonParams:
    """llama.cpp's parameters for serving the GGUF file `path` as `local` says."""
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.model_alias = {MODEL_ALIAS if not local.model_path else path.stem}
    params.n_parallel = local.model_parallel
    params.n_ctx = local.model_parallel * local.model_context
    params.cont_batching = True
    params.port = local.embedded_model_port
    params.hostnames = ["127.0.0.1"]
    params.n_threads_http = local.model_parallel + 4
    if local.model_embeddings:
        params.embedding = True
        params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
    return params


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    local = LocalStack.read_from_env()
    path = Path(local.model_path) if local.model_path else ensure_default_model(Path(local.cache_dir))
    params = server_params(local, path)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = xllamacpp.Server(params)
    print(f"model server serving {path.name} at {server.listening_address}", flush=True)
    stop.wait()
    del server  # joins llama.cpp's threads before the process exits


if __name__ == "__main__":
    main()
