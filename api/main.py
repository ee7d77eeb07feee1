"""The API app: ``uvicorn --factory api.main:create_app``."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from api import health
from api.generation import get_router
from gateway.config import Config
from gateway.logs import use_json


def create_app(config: Config | None = None) -> FastAPI:
    """Build the API for `config` (read from the environment and `.env` when omitted)."""
    config = config or Config.read_from_env()
    # The gateway's own messages (api.*), beside uvicorn's; an app that configured
    # logging already keeps its configuration.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    if config.log_format == "json":
        names = ("", "uvicorn", "uvicorn.error", "uvicorn.access")
        use_json(*(logging.getLogger(name) for name in names))
    # The API's own access line (api.access: with the job's id, model and queue, the
    # time taken) replaces uvicorn's, which named neither; health probes are not logged.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    app = FastAPI(
        title="LLM API",
        description="Generation and chat jobs, queued on a broker and run by workers.",
        version="0.1.0",
    )
    app.include_router(get_router(config))
    app.include_router(health.router)
    return app
