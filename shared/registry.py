"""The models a deployment serves: for each, its names, its model server, its queue.

Set ``MODELS_FILE`` (YAML or JSON) or ``MODELS`` (the same, inline JSON):

    models:
      - name: small                      # what requests ask for (meta.model, "model")
        aliases: [qwen-1.5b]
        url: http://gpu-a:8000           # its OpenAI-compatible server
        api_key: ...                     # optional; or api_key_env: SMALL_KEY
        served_name: Qwen/Qwen2.5-1.5B-Instruct   # what that server calls it (default: name)
        priority_scheduling: true        # vLLM --scheduling-policy priority: jobs' priorities passed on
        queue: llm-small                 # default: {QUEUE_NAME}.{name}
      - name: large
        url: http://gpu-b:8000
    default: small                       # for requests that name no model (default: the first)

Without either, ``INNER_LLM_URL`` alone is a one-model registry: every job goes to
``QUEUE_NAME``, and the model a request names is passed to that server as it is.
API and workers read the same registry: the API routes each job to its model's
queue, or refuses an unknown model (404) before anything is queued; a worker
consumes the queues of the models it is started for (``WORKER_MODELS``), and calls
each job's model server.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from shared.config import Config, model_server_url

QUEUE_CHARS = re.compile(r"^[A-Za-z0-9._:-]+$")


class RegistryError(ValueError):
    """The model registry setting is not what it should be."""


class UnknownModel(LookupError):
    """A request named a model the registry does not list."""

    def __init__(self, model: str, known: list[str]) -> None:
        super().__init__(f"model {model!r} is not served here; the models are: {', '.join(known)}")
        self.model = model
        self.known = known


class UnknownQueue(LookupError):
    """A request named a queue no model of the registry is served from."""

    def __init__(self, queue: str, known: list[str]) -> None:
        super().__init__(f"no queue named {queue!r} here; the queues are: {', '.join(known)}")
        self.queue = queue
        self.known = known


@dataclass(frozen=True)
class Model:
    """One model: the names it is asked for by, its server, and its queue."""

    name: str
    url: str
    queue: str
    aliases: tuple[str, ...] = ()
    served_name: str | None = None
    api_key: SecretStr | None = field(default=None, repr=False)
    # Its server schedules by a request's `priority` (vLLM's --scheduling-policy priority):
    # each job's priority is passed on, so an urgent one overtakes inside the server too.
    priority_scheduling: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class Registry:
    models: tuple[Model, ...]
    default: Model
    passthrough: bool = False  # one model from INNER_LLM_URL: any model name goes to it

    def route(self, requested: str | None) -> Model:
        """The model a request is for: the named one, or the default; UnknownModel else."""
        if not requested or self.passthrough:
            return self.default
        for model in self.models:
            if requested in model.names:
                return model
        raise UnknownModel(requested, self.names())

    def names(self) -> list[str]:
        return [name for model in self.models for name in model.names]

    def by_name(self, name: str) -> Model:
        for model in self.models:
            if model.name == name:
                return model
        raise UnknownModel(name, self.names())

    @property
    def queues(self) -> list[str]:
        return sorted({model.queue for model in self.models})

    def by_queue(self, queue: str, default_queue: str) -> Model:
        """The model served from `queue` (the first listed, when several share it), and
        the default model for `default_queue` (QUEUE_NAME); UnknownQueue else."""
        if queue == default_queue:
            return self.default
        for model in self.models:
            if model.queue == queue:
                return model
        raise UnknownQueue(queue, sorted({default_queue, *self.queues}))

    def queues_for(self, names: str) -> list[str]:
        """The queues of the comma-separated model `names` (all models when empty)."""
        wanted = [name.strip() for name in names.split(",") if name.strip()]
        if not wanted:
            return self.queues
        return sorted({self.route(name).queue for name in wanted} if not self.passthrough else self.queues)


def load_registry(config: Config) -> Registry:
    """The registry `config` describes (MODELS_FILE, MODELS, or INNER_LLM_URL alone)."""
    raw: Any = None
    if config.models_file:
        path = Path(config.models_file)
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise RegistryError(f"MODELS_FILE {path}: {exc}") from None
    elif config.models:
        try:
            raw = json.loads(config.models)
        except ValueError as exc:
            raise RegistryError(f"MODELS is not JSON: {exc}") from None
    if raw is None:
        single = Model(
            name=config.default_model or "default",
            url=config.inner_llm_url,
            queue=config.queue_name,
            served_name=config.default_model or None,
            api_key=config.inner_llm_api_key,
            priority_scheduling=config.inner_llm_priority_scheduling,
        )
        return Registry((single,), single, passthrough=True)
    return _parse(raw, config)


def _parse(raw: Any, config: Config) -> Registry:
    entries = raw.get("models") if isinstance(raw, dict) else raw
    if not isinstance(entries, list) or not entries:
        raise RegistryError("the model registry needs a non-empty list under 'models'")
    models = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry.get("url"):
            raise RegistryError(f"models[{index}] needs 'name' and 'url'")
        name = entry["name"]
        aliases = tuple(str(alias) for alias in entry.get("aliases") or ())
        for each in (name, *aliases):
            if each in seen:
                raise RegistryError(f"model name {each!r} is listed twice")
            seen.add(each)
        queue = str(entry.get("queue") or f"{config.queue_name}.{name}")
        if not QUEUE_CHARS.match(queue):
            raise RegistryError(f"models[{index}]: queue {queue!r} may hold only letters, digits and . _ : -")
        key = entry.get("api_key")
        if not key and entry.get("api_key_env"):
            key = os.environ.get(str(entry["api_key_env"]))
        url = model_server_url(str(entry["url"]))
        models.append(
            Model(
                name=name,
                url=url,
                queue=queue,
                aliases=aliases,
                served_name=entry.get("served_name"),
                api_key=SecretStr(str(key)) if key else None,
                priority_scheduling=entry.get("priority_scheduling") is True,
            )
        )
    registry = Registry(tuple(models), models[0])
    default = raw.get("default") if isinstance(raw, dict) else None
    if default:
        try:
            registry = Registry(registry.models, registry.route(str(default)))
        except UnknownModel as exc:
            raise RegistryError(f"default: {exc}") from None
    return registry
