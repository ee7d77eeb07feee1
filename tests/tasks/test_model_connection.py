"""The model-server client against a real HTTP server (the fake one, in a thread)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from settings import Config
from tasks.model_client import ChatRequest, ModelClient

pytestmark = pytest.mark.integration


def test_a_thread_keeps_its_connection_to_the_model_server(fake: Any) -> None:
    # A streamed answer read only up to [DONE] would close the connection, and every
    # job would pay for a new one (as would threads queueing on one shared pool).
    client = ModelClient(Config(_env_file=None, inner_llm_url=fake.url))  # type: ignore[call-arg]
    request = ChatRequest(messages=[{"role": "user", "content": "hi"}], temperature=0.2, tokens_limit=8)
    try:
        answers = [client.chat(request).as_dict()["content"] for _ in range(5)]
        threads = [threading.Thread(target=client.chat, args=(request,)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        client.close()
    assert answers == ["echo: hi"] * 5
    assert len(fake.completions) == 8
    assert len(fake.clients) == 4  # this thread's connection, and one per other thread
