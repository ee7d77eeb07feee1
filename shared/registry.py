"""The models a deployment serves: for each, its names, its model server, its queue.

Set ``MODELS_FILE`` (YAML or JSON) or ``MODELS`` (the same, inline JSON):

    models:
      - name: small                      # what requests ask for (meta.model, "model")
        aliases: [qwen-1.5b]
        url: http://gpu-a:8000           # its OpenAI-compatible server
        api_key: ...                     # optional; or api_key_env: SMALL_KEY
        served_name: Qwen/Qwen2.5-1.5B-Instruct   # what that server calls it (default: name)
        priority_scheduling: true        # vLLM --scheduling-policy priority: jobs' priorities passed on
        messages_api: true               # its server serves Anthropic's /v1/messages: sent there as given
        queue: llm-small                 # default: {QUEUE_NAME}.{name}
      - name: large
        servers:                         # several servers of one model (docs/servers.md)
          - url: http://gpu-b:8000
            slots: 16                    # calls it takes at once (default 16)
            labels: {gpu: h100}
          - url: http://gpu-c:8000
            slots: 4
            api_key_env: GPU_C_KEY       # a server's own key (default: the model's)
        fallbacks: [small]               # run on these when no server of large answers
        fallback_after: 10               # seconds without a healthy server before that
        queue_fallback_after: 30         # opt-in: also when a job waited this long for a slot
        prefix_affinity: true            # a shared prompt prefix goes back to its server
        prices:                          # USD per million tokens (default 0: free)
          input: 0.15
          cached_input: 0.075            # prompt tokens the server had cached (default: input's)
          output: 0.60                   # an embedding model has input only
    default: small                       # for requests that name no model (default: the first)

Without either, ``INNER_LLM_URL`` alone is a one-model registry: every job goes to
``QUEUE_NAME``, and the model a request names is passed to that server as it is.
``INNER_LLM_URL`` may name several servers of that model, comma-separated, each with
``INNER_LLM_SLOTS`` slots.
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
from urllib.parse import urlsplit

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


DEFAULT_SLOTS = 16
NANO = 1_000_000_000  # nano-USD in a USD: what costs are counted in, as integers


@dataclass(frozen=True)
class Prices:
    """What a model's tokens cost, in USD per million tokens."""

    input: float = 0.0
    cached_input: float | None = None  # None: input's
    output: float = 0.0

    def cost(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> int:
        """What that many tokens cost, in nano-USD (1e-9 USD), rounded to the nearest:
        `cached_tokens` are among the `input_tokens`, at the cached price."""
        cached = min(max(cached_tokens, 0), input_tokens)
        cached_price = self.input if self.cached_input is None else self.cached_input
        micro = (input_tokens - cached) * self.input + cached * cached_price + output_tokens * self.output
        return round(micro * 1000)  # USD per million tokens x tokens = micro-USD

    @property
    def free(self) -> bool:
        return not (self.input or self.cached_input or self.output)


@dataclass(frozen=True)
class Server:
    """One server of a model: where it is, how many calls it takes at once, its key."""

    name: str  # unique within its model: "host:port" unless the registry names it
    url: str = field(repr=False)  # may hold a user and password
    slots: int = DEFAULT_SLOTS
    api_key: SecretStr | None = field(default=None, repr=False)
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Model:
    """One model: the names it is asked for by, its servers, and its queue."""

    name: str
    url: str = field(repr=False)  # its first server's (may hold a user and password)
    queue: str
    aliases: tuple[str, ...] = ()
    served_name: str | None = None
    api_key: SecretStr | None = field(default=None, repr=False)
    # Its server schedules by a request's `priority` (vLLM's --scheduling-policy priority):
    # each job's priority is passed on, so an urgent one overtakes inside the server too.
    priority_scheduling: bool = False
    # Its servers serve Anthropic's /v1/messages themselves (vLLM, llama.cpp): a
    # /v1/messages job is sent there as its client gave it, not translated (docs/anthropic.md).
    messages_api: bool = False
    # Its servers; one made of `url` and `api_key` when the registry lists none.
    servers: tuple[Server, ...] = ()
    # Models to run a job on, in turn, when this one has had no healthy server for
    # `fallback_after` seconds or (when set) the job waited `queue_fallback_after` seconds.
    fallbacks: tuple[str, ...] = ()
    fallback_after: float = 10.0
    queue_fallback_after: float | None = None
    prefix_affinity: bool = True
    prices: Prices = Prices()

    def __post_init__(self) -> None:
        if not self.servers:
            server = Server(server_name(self.url), self.url, DEFAULT_SLOTS, self.api_key)
            object.__setattr__(self, "servers", (server,))

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def pooled(self) -> bool:
        """Its jobs take a slot of one of its servers (tasks/model/servers.py): it has
        several servers, or fallbacks that a server's health decides."""
        return len(self.servers) > 1 or bool(self.fallbacks)

    def server(self, name: str) -> Server:
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(name)


def server_name(url: str) -> str:
    """A server's name from its URL: host:port (never a user or password), and its path if any."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path.rstrip("/")
    return re.sub(r"[^A-Za-z0-9._:/-]", "_", f"{host}:{port}{path}")


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
        urls = config.inner_llm_urls
        servers = tuple(Server(server_name(url), url, config.inner_llm_slots, config.inner_llm_api_key) for url in urls)
        if len({server.name for server in servers}) < len(servers):
            raise RegistryError("INNER_LLM_URL names one server twice")
        single = Model(
            name=config.default_model or "default",
            url=urls[0],
            queue=config.queue_name,
            served_name=config.default_model or None,
            api_key=config.inner_llm_api_key,
            priority_scheduling=config.inner_llm_priority_scheduling,
            messages_api=config.inner_llm_messages_api,
            servers=servers,
        )
        return Registry((single,), single, passthrough=True)
    return _parse(raw, config)


def _key(entry: dict[str, Any]) -> SecretStr | None:
    key = entry.get("api_key")
    if not key and entry.get("api_key_env"):
        key = os.environ.get(str(entry["api_key_env"]))
    return SecretStr(str(key)) if key else None


def _servers(entry: dict[str, Any], where: str, model_key: SecretStr | None) -> tuple[Server, ...]:
    listed = entry.get("servers")
    if listed is None:
        url = model_server_url(str(entry["url"]))
        return (Server(server_name(url), url, _slots(entry, where), model_key),)
    if not isinstance(listed, list) or not listed:
        raise RegistryError(f"{where}: 'servers' needs a non-empty list")
    servers = []
    for index, item in enumerate(listed):
        at = f"{where}.servers[{index}]"
        if isinstance(item, str):
            item = {"url": item}
        if not isinstance(item, dict) or not item.get("url"):
            raise RegistryError(f"{at} needs 'url'")
        url = model_server_url(str(item["url"]))
        labels = item.get("labels") or {}
        if not isinstance(labels, dict):
            raise RegistryError(f"{at}: 'labels' needs a mapping")
        name = str(item.get("name") or server_name(url))
        if not QUEUE_CHARS.match(name.replace("/", ".")):
            raise RegistryError(f"{at}: name {name!r} may hold only letters, digits and . _ : - /")
        servers.append(
            Server(
                name,
                url,
                _slots(item, at),
                _key(item) or model_key,
                tuple(sorted((str(k), str(v)) for k, v in labels.items())),
            )
        )
    if len({server.name for server in servers}) < len(servers):
        raise RegistryError(f"{where}: two servers with one name (give each a 'name')")
    return tuple(servers)


def _prices(entry: dict[str, Any], where: str) -> Prices:
    raw = entry.get("prices")
    if raw is None:
        return Prices()
    if not isinstance(raw, dict) or set(raw) - {"input", "cached_input", "output"}:
        raise RegistryError(f"{where}: 'prices' takes input, cached_input and output (USD per million tokens)")
    values: dict[str, float] = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1_000_000:
            raise RegistryError(f"{where}: prices.{name} needs a number of USD per million tokens, 0 to 1000000")
        values[name] = float(value)
    return Prices(**values)


def _slots(entry: dict[str, Any], where: str) -> int:
    slots = entry.get("slots", DEFAULT_SLOTS)
    if isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= 4096:
        raise RegistryError(f"{where}: 'slots' needs a whole number from 1 to 4096")
    return slots


def _seconds(entry: dict[str, Any], name: str, where: str, default: float | None) -> float | None:
    value = entry.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 86400:
        raise RegistryError(f"{where}: '{name}' needs seconds from 0 to 86400")
    return float(value)


def _parse(raw: Any, config: Config) -> Registry:
    entries = raw.get("models") if isinstance(raw, dict) else raw
    if not isinstance(entries, list) or not entries:
        raise RegistryError("the model registry needs a non-empty list under 'models'")
    models = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise RegistryError(f"models[{index}] needs 'name' and 'url' (or 'servers')")
        if not entry.get("url") and not entry.get("servers"):
            raise RegistryError(f"models[{index}] needs 'name' and 'url' (or 'servers')")
        name = entry["name"]
        aliases = tuple(str(alias) for alias in entry.get("aliases") or ())
        for each in (name, *aliases):
            if each in seen:
                raise RegistryError(f"model name {each!r} is listed twice")
            seen.add(each)
        queue = str(entry.get("queue") or f"{config.queue_name}.{name}")
        if not QUEUE_CHARS.match(queue):
            raise RegistryError(f"models[{index}]: queue {queue!r} may hold only letters, digits and . _ : -")
        where = f"models[{index}]"
        key = _key(entry)
        servers = _servers(entry, where, key)
        fallbacks = entry.get("fallbacks") or []
        if not isinstance(fallbacks, list) or not all(isinstance(f, str) for f in fallbacks):
            raise RegistryError(f"{where}: 'fallbacks' needs a list of model names")
        models.append(
            Model(
                name=name,
                url=servers[0].url,
                queue=queue,
                aliases=aliases,
                served_name=entry.get("served_name"),
                api_key=key,
                priority_scheduling=entry.get("priority_scheduling") is True,
                messages_api=entry.get("messages_api") is True,
                servers=servers,
                fallbacks=tuple(fallbacks),
                fallback_after=_seconds(entry, "fallback_after", where, 10.0) or 0.0,
                queue_fallback_after=_seconds(entry, "queue_fallback_after", where, None),
                prefix_affinity=entry.get("prefix_affinity", True) is not False,
                prices=_prices(entry, where),
            )
        )
    registry = Registry(tuple(models), models[0])
    for model in models:
        for fallback in model.fallbacks:
            if fallback not in registry.names() or registry.route(fallback) is model:
                raise RegistryError(f"model {model.name!r}: fallback {fallback!r} is not another model of the registry")
    default = raw.get("default") if isinstance(raw, dict) else None
    if default:
        try:
            registry = Registry(registry.models, registry.route(str(default)))
        except UnknownModel as exc:
            raise RegistryError(f"default: {exc}") from None
    return registry
