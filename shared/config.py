"""Every setting of the gateway, read from the environment and `.env` in one place."""

from __future__ import annotations

import os
from functools import cached_property
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.contract import DEFAULT_PRIORITY, Keys


def _host_port(item: str, default_port: int) -> tuple[str, int]:
    host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
    try:
        return host.strip("[]"), int(port) if port else default_port
    except ValueError:
        raise ValueError(f"not host:port: {item.strip()!r}") from None


def url_shown(url: str) -> str:
    """A URL as messages and logs may show it: without user or password."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def model_server_url(url: str) -> str:
    """A model server's base URL as the gateway uses it: with a scheme, without ``/v1``.

    The spec writes ``INNER_LLM_URL=localhost:8670``, without a scheme."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url.removesuffix("/v1")


class Config(BaseSettings):
    """The spec's environment variables plus the few the gateway adds.

    Variable names are the field names in upper case (``RABBIT_MQ_HOST`` for
    ``rabbit_mq_host``). With ``RABBIT_MQ_HOST`` unset, the broker is the Redis
    server of ``REDIS_HOST``.
    """

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # The spec's variables.
    rabbit_mq_host: str | None = None
    rabbit_mq_port: int = 5672
    rabbit_mq_login: str = "guest"
    rabbit_mq_password: SecretStr = SecretStr("guest")
    rabbit_mq_vhost: str = "/"
    queue_name: str = "llm-api-queue"
    redis_host: str = "localhost"
    redis_port: int = 6379
    redis_db: int = 0
    redis_password: SecretStr | None = None
    redis_prefix: str = "llm-api"
    inner_llm_url: str = "http://localhost:8670"

    # Model server, or servers (shared/registry.py).
    models: str = Field("", description="the model registry as inline JSON (see MODELS_FILE)")
    models_file: str = Field("", description="the model registry: a YAML or JSON file")
    worker_models: str = Field("", description="models (of the registry) a worker runs; empty: all")
    inner_llm_api_key: SecretStr | None = None
    inner_llm_priority_scheduling: bool = Field(
        False, description="INNER_LLM_URL's server schedules by priority (vLLM --scheduling-policy priority)"
    )
    inner_llm_messages_api: bool = Field(
        False, description="INNER_LLM_URL's server serves Anthropic's /v1/messages itself: messages go there as given"
    )
    inner_llm_slots: int = Field(
        16, ge=1, le=4096, description="calls each server of INNER_LLM_URL takes at once (with several servers)"
    )
    default_model: str = ""
    # Models with several servers (docs/servers.md).
    server_failures: int = Field(
        3, ge=1, description="failures in a row after which a server takes no new jobs until a probe answers"
    )
    server_probe_backoff: float = Field(1.0, gt=0, description="seconds to a failed server's first probe; doubles")
    server_probe_max: float = Field(30.0, gt=0, description="most seconds between a failed server's probes")
    prefix_affinity_chars: int = Field(
        1000, ge=1, description="a prompt's prefix this long or longer is sent back to the server that last had it"
    )
    prefix_affinity_ttl: int = Field(600, ge=1, description="seconds a prefix is remembered with its server")
    llm_connect_timeout: float = Field(5.0, gt=0)
    llm_timeout: float = Field(600.0, gt=0, description="seconds to wait for one model-server answer")
    llm_max_retries: int = Field(3, ge=0)
    llm_retry_backoff: float = Field(0.5, ge=0, description="first retry delay; doubles each attempt")
    llm_deadline: float = Field(
        900.0, gt=0, description="seconds a job may spend on the model server, every attempt and wait included"
    )

    # Jobs.
    wait_timeout: float = Field(600.0, gt=0, description="seconds a request waits for its job")
    result_ttl: int = Field(86400, gt=0, description="seconds results are kept in Redis")
    stream_leave_grace: float = Field(
        30.0,
        ge=0,
        description="seconds a streamed job runs on after its last reader left, for it to come back"
        " (Last-Event-ID); then it is cancelled. 0: cancelled at once",
    )
    stream_ttl: int = Field(
        600,
        gt=0,
        description="seconds a streamed job's events are kept in Redis after its end, for a client to resume"
        " (Last-Event-ID); its answer is kept RESULT_TTL",
    )
    response_ttl: int = Field(
        0,
        ge=0,
        description="seconds a stored /v1/responses response is kept (in Redis and the file store) from its"
        " creation; 0: RESULT_TTL's. Conversations are kept until deleted",
    )
    response_sweep_seconds: float = Field(
        3600.0, gt=0, description="how often each API process removes the responses older than RESPONSE_TTL"
    )
    compaction_secret: SecretStr | None = Field(
        None,
        description="the secret /v1/responses/compact seals its compaction items with (every API process the same);"
        " unset: compaction is refused (503)",
    )
    responses_websocket_seconds: int = Field(
        3600, ge=1, description="seconds a /v1/responses WebSocket connection lasts (OpenAI's: 60 minutes)"
    )
    responses_websockets_per_tenant: int = Field(
        100,
        ge=0,
        description="WebSocket connections to /v1/responses one tenant may hold open on one API process; past"
        " it, the upgrade is refused with 429. 0: no limit",
    )
    token_counts_per_tenant: int = Field(
        4,
        ge=0,
        description="token counts (/v1/responses/input_tokens, /v1/messages/count_tokens) one tenant may have asked"
        " of the model servers at once on one API process; past it, 429. 0: no limit",
    )
    streams_in_flight: int = Field(
        100,
        ge=0,
        description="with several tenants, the streams one may read at once, across API processes, unless"
        " its own quota (streams_in_flight) says otherwise; past it, 429. 0: no limit",
    )
    worker_concurrency: int = Field(64, ge=1)
    broker_connect_timeout: float = Field(3.0, gt=0)
    broker_heartbeat: int = Field(
        60, ge=0, description="seconds of silence after which RabbitMQ and a worker count each other gone; 0: off"
    )
    redis_connect_timeout: float = Field(3.0, gt=0)
    publish_threads: int = Field(16, ge=1, description="threads the API publishes with")
    job_lease: int = Field(
        30, ge=3, description="seconds after its worker is gone that a job may be run by another worker"
    )
    worker_shutdown_grace: float = Field(
        60.0, ge=0, description="seconds a stopping worker lets its jobs finish before handing them back"
    )
    dead_letter_max: int = Field(100000, ge=1, description="dead letters kept; the oldest go first (RabbitMQ)")

    # Clusters (docs/clustering.md). RABBIT_MQ_HOST may name several nodes (comma-separated,
    # each host or host:port): the API and the workers fail over between them.
    rabbit_mq_queue_type: Literal["classic", "quorum"] = Field(
        "classic", description="classic: one node's priority queues; quorum: replicated (Raft), priority bands"
    )
    redis_sentinels: str = Field(
        "", description="Redis Sentinels (comma-separated host:port): the result store is their master"
    )
    redis_sentinel_master: str = Field("mymaster", description="the name the Sentinels monitor the master by")
    redis_sentinel_password: SecretStr | None = Field(None, description="the Sentinels' own password, if any")
    redis_replica_acks: int = Field(
        1, ge=0, description="with Sentinels: replicas that must hold a claim or a result before it counts (WAIT)"
    )

    # Files and batches (shared/storage/file_store.py; the API's api/openai/, the worker's tasks/batch_lines.py).
    file_store_url: str = Field(
        "data", description="where files and batches are kept: a directory or s3://bucket/prefix"
    )
    file_store_s3_endpoint: str = Field("", description="an S3-compatible server's URL (MinIO, Ceph, ...); empty: AWS")
    file_store_s3_region: str = ""
    file_store_s3_key: str = ""
    file_store_s3_secret: SecretStr | None = None
    batch_max_file_bytes: int = Field(209_715_200, ge=1024, description="largest file POST /v1/files takes")
    batch_max_lines: int = Field(50_000, ge=1, description="most requests one batch input file may hold")
    batch_lines_in_flight: int = Field(
        32, ge=1, description="lines of one model an API process has queued or running at once, over all batches"
    )
    batch_lines_beside_interactive: int = Field(
        4, ge=1, description="the same while the process awaits interactive requests: they keep their latency"
    )
    batch_poll_seconds: float = Field(2.0, gt=0, description="how often batches are looked after")

    # Webhooks (shared/webhooks.py, tasks/webhook_delivery.py).
    webhooks: SecretStr | None = Field(None, description="the webhook endpoints as inline JSON (see WEBHOOKS_FILE)")
    webhooks_file: str = Field("", description="the webhook endpoints: a YAML or JSON file (url, secret, events)")
    webhook_allow_private: bool = Field(False, description="allow webhook URLs of private and loopback addresses")
    webhook_timeout: float = Field(10.0, gt=0, description="seconds one delivery may take, connecting included")
    webhook_retry_hours: float = Field(72.0, gt=0, description="hours a delivery is retried before it gives up")
    webhook_max_backoff: float = Field(600.0, gt=0, description="longest wait between two tries, in seconds")

    log_format: Literal["json", "text"] = Field(
        "json", description="json: one JSON object per line (shared/telemetry/logs.py)"
    )

    # Tracing (shared/telemetry/tracing.py): OpenTelemetry's own variables. Set, spans go over
    # OTLP/HTTP; the SDK reads its other OTEL_* variables from the environment itself.
    otel_exporter_otlp_endpoint: str = Field("", description="OTLP/HTTP collector (http://host:4318): traces on")
    otel_exporter_otlp_traces_endpoint: str = Field("", description="the traces' own OTLP/HTTP URL (.../v1/traces)")
    otel_service_name: str = Field("", description="the service name on spans (default llm-api, llm-worker)")
    otel_sdk_disabled: bool = Field(False, description="true: no tracing, whatever the endpoint")

    # Scaling signals (tasks/capacity.py, api/observability/scaling.py).
    worker_report_seconds: float = Field(
        2.0, gt=0, description="how often each worker reports its slots and busy slots (GET /scaling)"
    )

    # Access and limits (api/tenancy/guard.py).
    api_keys: SecretStr | None = Field(None, description="comma-separated keys; when set, requests need one")
    api_keys_file: str = Field(
        "", description="file of API keys: one per line (# comments), or tenants in YAML or JSON (shared/tenants.py)"
    )
    rate_limit_per_minute: int = Field(
        0, ge=0, description="the default tenant's requests per minute (per address without keys); 0: no limit"
    )
    usage_days: int = Field(400, ge=1, description="days each day's usage (GET /usage) is kept in Redis")

    # The control plane (shared/control/, api/admin/): projects and keys at runtime.
    admin_api_keys: SecretStr | None = Field(
        None, description="comma-separated admin API keys: the only keys that reach /v1/organization/*"
    )
    control_database_url: SecretStr | None = Field(
        None,
        description="the control plane's database (sqlite:///path, postgresql://user:password@host/db);"
        " empty: control.db in FILE_STORE_URL's folder (./data/control.db with an S3 file store)",
    )
    control_poll_seconds: float = Field(
        5.0,
        gt=0,
        le=300,
        description="how often each API process compares its projects and keys with the database's, in case"
        " a change notice (Redis pub/sub) was lost",
    )
    spend_seed_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="how often each API process reads what projects with a spend limit spent this month in the"
        " usage history: where their count starts again if Redis comes back empty",
    )
    usage_flush_seconds: float = Field(
        10.0,
        gt=0,
        le=50,
        description="how often an API process moves the finished minutes' usage from Redis into the control"
        " plane's database (the usage and costs endpoints' history)",
    )
    tenant_max_priority: int = Field(
        DEFAULT_PRIORITY,
        ge=0,
        le=9,
        description="several tenants: the highest priority a tenant's job may have, unless the tenants file gives"
        " the tenant its own (quotas.max_priority); a job asking for more runs at it",
    )
    fair_share: bool = Field(True, description="several tenants: a busy model's workers are shared by weight")
    fair_share_ahead: int = Field(
        4, ge=1, le=10_000, description="jobs kept waiting in a busy model's queue while tenants take turns"
    )
    max_queued_jobs: int = Field(10000, ge=1, description="jobs waiting to start before new ones get 429")
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_json_depth: int = Field(
        64, ge=4, le=256, description="deepest nesting of arrays and objects a request body or batch line may have"
    )
    public_base_url: str = Field(
        "",
        description="the API's address as clients reach it (https://llm.example.com): in Location headers;"
        " empty: relative locations",
    )
    metrics_token: SecretStr | None = Field(
        None, description="a bearer token for /metrics and /scaling alone (Prometheus, KEDA); admin keys work too"
    )
    max_prompt_chars: int = Field(200_000, ge=1, description="characters of content or of all messages")
    max_messages: int = Field(500, ge=1)
    max_embedding_inputs: int = Field(2048, ge=1, description="inputs of one /v1/embeddings request")
    max_embedding_input_tokens: int = Field(
        8192, ge=1, description="token ids of one /v1/embeddings input given as tokens (a text: MAX_PROMPT_CHARS)"
    )
    embed_coalesce_wait_ms: float = Field(
        1.0,
        ge=0,
        description="milliseconds an embedding job waits for others of its model to share a model-server call;"
        " 0: each job its own call",
    )
    embed_coalesce_max_inputs: int = Field(256, ge=1, description="inputs of one coalesced embedding call at most")
    embed_calls_in_flight: int = Field(
        2, ge=1, description="coalesced embedding calls of a model one worker process has in flight at once"
    )
    max_stop_words: int = Field(16, ge=0)
    max_stop_word_chars: int = Field(200, ge=1)
    max_tokens_limit: int = Field(32768, ge=1, description="largest tokens_limit (max_tokens) accepted")
    max_choices: int = Field(
        16, ge=1, description="most choices one request asks for (n, best_of, beams), passed on fields included"
    )

    @model_validator(mode="after")
    def _check_cluster(self) -> Config:
        self.rabbit_mq_nodes, self.sentinels  # noqa: B018 - each says which address is malformed
        if self.sentinels and not self.uses_rabbitmq:
            raise ValueError("REDIS_SENTINELS needs RABBIT_MQ_HOST: the Redis broker does not follow a Sentinel master")
        if self.rabbit_mq_queue_type == "quorum" and not self.uses_rabbitmq:
            raise ValueError("RABBIT_MQ_QUEUE_TYPE=quorum needs RABBIT_MQ_HOST (quorum queues are RabbitMQ's)")
        return self

    @field_validator("public_base_url")
    @classmethod
    def _public_url(cls, url: str) -> str:
        url = url.strip().rstrip("/")
        parts = urlsplit(url)
        if url and (parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password):
            raise ValueError("PUBLIC_BASE_URL: an http(s) address without user or password (https://llm.example.com)")
        return url

    @field_validator("compaction_secret")
    @classmethod
    def _long_enough(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is None or not secret.get_secret_value():
            return None  # unset (compose passes an empty value)
        if len(secret.get_secret_value()) < 32:
            raise ValueError("COMPACTION_SECRET: at least 32 characters (secrets.token_urlsafe(32))")
        return secret

    @field_validator("inner_llm_url")
    @classmethod
    def _add_scheme(cls, url: str) -> str:
        urls = [model_server_url(part) for part in url.split(",") if part.strip()]
        if not urls:
            raise ValueError("INNER_LLM_URL: no model server named")
        return ",".join(urls)

    @property
    def inner_llm_urls(self) -> list[str]:
        """The servers of INNER_LLM_URL (one, or several comma-separated)."""
        return self.inner_llm_url.split(",")

    @property
    def inner_llm_url_shown(self) -> str:
        """INNER_LLM_URL as messages and logs may show it: without user or password."""
        return ",".join(url_shown(url) for url in self.inner_llm_urls)

    @classmethod
    def read_from_env(cls, env_file: str | None = None) -> Config:
        """Read the environment, then `.env` (or ``ENV_FILE``; empty means none) for what it lacks."""
        if env_file is None:
            env_file = os.environ.get("ENV_FILE", ".env")
        return cls(_env_file=env_file or None)  # type: ignore[call-arg]

    @property
    def uses_rabbitmq(self) -> bool:
        """Whether the broker is RabbitMQ (else the Redis server doubles as broker)."""
        return bool(self.rabbit_mq_host)

    @property
    def rabbit_mq_nodes(self) -> list[tuple[str, int]]:
        """The RabbitMQ nodes of RABBIT_MQ_HOST (one, or a cluster's), each with its port."""
        hosts = (self.rabbit_mq_host or "").split(",")
        return [_host_port(item, self.rabbit_mq_port) for item in hosts if item.strip()]

    @property
    def quorum_queues(self) -> bool:
        """Whether the broker's queues are RabbitMQ quorum queues (replicated, no priorities)."""
        return self.uses_rabbitmq and self.rabbit_mq_queue_type == "quorum"

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """The Redis Sentinels of REDIS_SENTINELS (none: REDIS_HOST is the result store)."""
        return [_host_port(item, 26379) for item in self.redis_sentinels.split(",") if item.strip()]

    @property
    def broker_name(self) -> str:
        """The broker as errors name it: "RabbitMQ" or "Redis"."""
        return "RabbitMQ" if self.uses_rabbitmq else "Redis"

    @property
    def redis_url(self) -> str:
        """URL of the result store."""
        auth = f":{quote(self.redis_password.get_secret_value(), safe='')}@" if self.redis_password else ""
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/{self.redis_db}"

    @property
    def broker_url(self) -> str:
        """URL of the broker: RabbitMQ when configured, otherwise Redis."""
        if not self.uses_rabbitmq:
            return self.redis_url
        login = quote(self.rabbit_mq_login, safe="")
        password = quote(self.rabbit_mq_password.get_secret_value(), safe="")
        vhost = quote(self.rabbit_mq_vhost, safe="")
        # Several nodes: Kombu's failover URL, tried in turn (Celery's round-robin).
        return ";".join(f"amqp://{login}:{password}@{host}:{port}/{vhost}" for host, port in self.rabbit_mq_nodes)

    @property
    def control_database(self) -> str:
        """The control plane's database URL: CONTROL_DATABASE_URL, or a SQLite file beside
        the file store's (so every process of a local deployment shares it)."""
        if self.control_database_url and self.control_database_url.get_secret_value().strip():
            return self.control_database_url.get_secret_value().strip()
        folder = "data" if self.file_store_url.startswith("s3://") else self.file_store_url.removeprefix("file://")
        return f"sqlite:///{folder.rstrip('/') or '.'}/control.db"

    @property
    def key_prefix(self) -> str:
        """What every Redis key of this deployment starts with."""
        return f"{self.redis_prefix}:"

    @cached_property
    def keys(self) -> Keys:
        """This deployment's Redis keys and channels (the contract's layout)."""
        return Keys(self.key_prefix)

    @property
    def dead_letter_queue(self) -> str:
        """The queue failed and unprocessable jobs are kept in, to list and replay."""
        return f"{self.queue_name}.dead"

    @property
    def webhook_queue(self) -> str:
        """The queue webhook deliveries wait in (every worker takes from it)."""
        return f"{self.queue_name}.webhooks"

    @property
    def longest_job(self) -> float:
        """Seconds one run of a job can take at most: the model-server deadline, and some."""
        return self.llm_deadline + 10

    @property
    def running_stream_ttl(self) -> int:
        """Seconds a streamed job's events are kept while it may still run (queued again
        after its worker died, then run whole), before its end shortens them to STREAM_TTL."""
        return int(self.longest_job + self.wait_timeout + self.stream_ttl)

    @property
    def job_ttl(self) -> int:
        """Seconds a job's claim is kept: it must outlive the job, then its result."""
        return int(self.result_ttl + self.longest_job + self.wait_timeout)
