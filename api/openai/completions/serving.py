"""Text completions: a request made an ``llm.complete`` job (the model server's own
/v1/completions, with no chat template); answered as chat completions are
(api/openai/chat/serving.py), in text_completion objects."""

from __future__ import annotations

from typing import Any

from api.openai.completions.types import COMPLETION_PASSED_ON, OpenAICompletionRequest


def completion_job(body: OpenAICompletionRequest) -> dict[str, Any]:
    """The ``llm.complete`` job of a completion request."""
    job = {"meta": body.meta(body.max_tokens), "openai": body.passed_on(COMPLETION_PASSED_ON)}
    return body.with_fallbacks(job)
