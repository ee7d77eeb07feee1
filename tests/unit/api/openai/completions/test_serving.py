"""Text completions' job (api/openai/completions/serving.py): the prompt and the model
server's own fields passed on, the sampling in meta, no messages."""

from __future__ import annotations

import pytest

from api.openai.completions.serving import completion_job
from api.openai.completions.types import OpenAICompletionRequest
from shared.contract import Job, TaskName

pytestmark = pytest.mark.unit


def test_a_completion_request_is_a_job_the_workers_take_with_its_prompt_passed_on() -> None:
    body = OpenAICompletionRequest.model_validate(
        {"prompt": ["a", "b"], "max_tokens": 7, "echo": True, "suffix": "!", "best_of": 2, "n": 2, "min_p": 0.1,
         "stop": ["x"], "fallbacks": []}
    )  # fmt: skip
    job = completion_job(body)
    assert job["meta"]["tokens_limit"] == 7 and job["meta"]["stop_words"] == ["x"]
    assert job["openai"] == {"prompt": ["a", "b"], "echo": True, "suffix": "!", "best_of": 2, "min_p": 0.1}
    assert job["fallbacks"] == [] and "messages" not in job
    assert Job.parse(job).prompt(TaskName.COMPLETE) == []  # a raw completion: no chat template
