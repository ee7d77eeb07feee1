"""The HTTP side of the gateway.

The spec's usage::

    from fastapi import FastAPI
    from api import Config, get_router

    app = FastAPI()
    config = Config.read_from_env()
    app.include_router(get_router(config))
"""

from api.main import get_router
from shared.config import Config

__all__ = ["Config", "get_router"]
