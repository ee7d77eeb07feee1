"""The work a job asks of the model server, bounded wherever in the job a field is."""

from __future__ import annotations

from typing import Any

import pytest

from api.errors import InvalidInput, LimitExceeded
from api.jobs.work import check_work
from shared.config import Config

pytestmark = pytest.mark.unit

CONFIG = Config(_env_file=None, max_tokens_limit=100, max_choices=4, max_stop_words=2)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("job", "refused", "said"),
    [
        ({"openai": {"min_tokens": 101}}, LimitExceeded, "min_tokens: 101; at most 100 (MAX_TOKENS_LIMIT)"),
        ({"openai": {"max_new_tokens": 10**9}}, LimitExceeded, "max_new_tokens"),
        ({"embed": {"input": ["x"], "max_tokens": 101}}, LimitExceeded, "max_tokens"),
        ({"meta": {"sampling": {"n": 5}}}, LimitExceeded, "n: 5; at most 4 (MAX_CHOICES)"),
        ({"openai": {"best_of": 0}}, InvalidInput, "best_of: 0; at least 1"),
        ({"openai": {"num_beams": "8"}}, InvalidInput, "num_beams: an integer, not str"),
        ({"openai": {"n": True}}, InvalidInput, "n: an integer, not bool"),
        ({"openai": {"prompt_logprobs": 21}}, LimitExceeded, "prompt_logprobs"),
        ({"openai": {"stop": ["a", "b", "c"]}}, LimitExceeded, "stop: 3 words; at most 2 (MAX_STOP_WORDS)"),
        ({"openai": {"stop": [1]}}, InvalidInput, "stop: a string or a list of strings"),
        ({"meta": {}, "openai": {"ignore_eos": True}}, InvalidInput, "ignore_eos"),
        ({"openai": {"ignore_eos": "yes"}}, InvalidInput, "ignore_eos: true or false"),
    ],
)
def test_a_job_over_a_limit_is_refused_naming_the_field(job: dict[str, Any], refused: type, said: str) -> None:
    with pytest.raises(refused) as caught:
        check_work(CONFIG, job)
    assert said in caught.value.message


def test_a_job_within_the_limits_passes() -> None:
    passed = {"min_tokens": 0, "ignore_eos": True, "best_of": 4.0, "stop": "x", "top_k": 10**9}
    check_work(CONFIG, {"meta": {"tokens_limit": 50, "sampling": {"n": 4}}, "openai": passed})
    check_work(CONFIG, {"meta": {}, "openai": {"ignore_eos": True, "max_tokens": 100}})
    check_work(CONFIG, {})
