"""The settings only `make run` reads (the one-command local stack), from the same
environment and `.env` as `Config`: where it serves the API and Flower, and the
embedded Valkey and model server it starts for what `.env` does not configure. None
of them is part of a deployment; a deployment's settings are `shared.config.Config`'s."""

from __future__ import annotations

import os

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class LocalStack(BaseSettings):
    """Where the local stack's processes listen, and what it embeds."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    flower_host: str = "127.0.0.1"
    flower_port: int = 5555
    flower_basic_auth: SecretStr | None = Field(None, description="user:password Flower asks for")
    embedded_redis_port: int = 6390
    embedded_model_port: int = 8670
    model_path: str = Field("", description="GGUF file the embedded model server serves; empty: SmolLM2-135M")
    model_parallel: int = Field(8, ge=1, description="requests the embedded model server decodes at once")
    model_servers: int = Field(
        1, ge=1, le=8, description="embedded model servers, on EMBEDDED_MODEL_PORT and the ports after it"
    )
    model_context: int = Field(2048, ge=256, description="context tokens of each of those requests")
    model_embeddings: bool = Field(
        True, description="the embedded model server also answers /v1/embeddings (llama.cpp's embedding mode)"
    )
    cache_dir: str = ".cache"

    @classmethod
    def read_from_env(cls) -> LocalStack:
        """Read the environment, then `.env` (or ``ENV_FILE``; empty means none), as `Config` does."""
        env_file = os.environ.get("ENV_FILE", ".env")
        return cls(_env_file=env_file or None)  # type: ignore[call-arg]
