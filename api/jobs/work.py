"""How much work a job asks of the model server, bounded by the deployment's limits.

A request's fields that set an amount of work (tokens to generate, choices, beams, stop
words, ...) are bounded on every endpoint, whether the gateway maps them itself (``n``,
``max_tokens``) or passes them on as given among a model server's own fields (vLLM's
``min_tokens``, ``best_of``, ``ignore_eos``; TGI's ``max_new_tokens``; Ollama's
``num_predict``). `check_work` reads the job as the workers will send it: its ``meta``,
and the request it passes on (``openai``, ``embed``).
"""

from __future__ import annotations

from typing import Any

from api.errors import InvalidInput, LimitExceeded
from shared.config import Config

# Counts of tokens to generate, under any server's name for them.
TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "max_new_tokens", "min_tokens",
                "num_predict", "n_predict")  # fmt: skip
# Counts of answers (or beams) generated for one.
CHOICE_FIELDS = ("n", "best_of", "num_beams", "beam_width")
# Log-probabilities asked per token (of the prompt's, too).
LOGPROB_FIELDS = ("top_logprobs", "prompt_logprobs")
MAX_LOGPROBS = 20


def check_work(config: Config, job: dict[str, Any]) -> None:
    """Refuse a job asking for more work than the deployment allows (422 naming the field
    and the limit), wherever in it the field is."""
    meta = job.get("meta") if isinstance(job.get("meta"), dict) else {}
    sampling = meta.get("sampling") if isinstance(meta.get("sampling"), dict) else {}
    passed = [part for part in (job.get("openai"), job.get("embed")) if isinstance(part, dict)]
    for fields in (sampling, *passed):
        for name in TOKEN_FIELDS:
            _count(fields, name, 0, config.max_tokens_limit, "MAX_TOKENS_LIMIT")
        for name in CHOICE_FIELDS:
            _count(fields, name, 1, config.max_choices, "MAX_CHOICES")
        for name in LOGPROB_FIELDS:
            _count(fields, name, 0, MAX_LOGPROBS, None)
        if "ignore_eos" in fields:
            if not isinstance(fields["ignore_eos"], bool):
                raise InvalidInput("ignore_eos: true or false")
            if fields["ignore_eos"] and meta.get("tokens_limit") is None and not _any_tokens(fields):
                raise InvalidInput(
                    "ignore_eos: generates up to the limit of tokens, so it needs one"
                    " (max_tokens, max_completion_tokens or max_output_tokens)"
                )
        if "stop" in fields:
            _stop_words(config, fields["stop"])


def _count(fields: dict[str, Any], name: str, least: int, most: int, setting: str | None) -> None:
    if fields.get(name) is None:
        return
    value = fields[name]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name}: an integer, not {type(fields[name]).__name__}")
    if value < least:
        raise InvalidInput(f"{name}: {value}; at least {least}")
    if value > most:
        raise LimitExceeded(f"{name}: {value}; at most {most}" + (f" ({setting})" if setting else ""))


def _any_tokens(fields: dict[str, Any]) -> bool:
    return any(fields.get(name) is not None for name in TOKEN_FIELDS if name != "min_tokens")


def _stop_words(config: Config, stop: Any) -> None:
    words = [stop] if isinstance(stop, str) else stop
    if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
        raise InvalidInput("stop: a string or a list of strings")
    if len(words) > config.max_stop_words:
        raise LimitExceeded(f"stop: {len(words)} words; at most {config.max_stop_words} (MAX_STOP_WORDS)")
    longest = max((len(word) for word in words), default=0)
    if longest > config.max_stop_word_chars:
        raise LimitExceeded(
            f"stop: a word of {longest} characters; at most {config.max_stop_word_chars} (MAX_STOP_WORD_CHARS)"
        )
