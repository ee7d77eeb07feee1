"""The composition root of the API: `get_router(config)` builds the API process's parts
and its routers, and `create_app` the app (``uvicorn --factory api.main:create_app``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import APIRouter, Depends, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from api.routes import batches, files, jobs, models, operations, usage
from api.routes.openai import openai_router
from api.routes.spec import ERROR_RESPONSES, spec_router
from api.services import Services
from shared.config import Config
from shared.telemetry import tracing
from shared.telemetry.logs import use_json


def get_router(config: Config) -> APIRouter:
    """Every endpoint of the gateway, for `config`: the spec's, OpenAI's, jobs, models and
    operations. It brings its own lifespan (connections to the broker and Redis), which
    FastAPI runs when the router is included in an app (the spec's usage snippet)."""
    parts = Services.build(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with parts.running():
            app.state.llm_gateway = parts  # found there by the routes' dependencies (api/deps.py)
            yield

    # Every endpoint but the probes needs a key (when keys are configured) and is rate limited.
    guarded = APIRouter(responses=ERROR_RESPONSES, dependencies=[Depends(parts.guard)])
    guarded.include_router(spec_router(parts.models))
    guarded.include_router(openai_router(parts.models))
    guarded.include_router(files.router)
    guarded.include_router(batches.router)
    guarded.include_router(jobs.router)
    guarded.include_router(models.router)
    guarded.include_router(usage.router)
    # What operators read (every tenant's figures): admin keys and METRICS_TOKEN only.
    operators = APIRouter(responses=ERROR_RESPONSES, dependencies=[Depends(parts.guard.operator)])
    operators.include_router(operations.router)
    outer = APIRouter(lifespan=lifespan)
    outer.include_router(operations.probes)
    outer.include_router(guarded)
    outer.include_router(operators)
    return outer


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
        docs_url=None,
        redoc_url=None,
        # Traced by OpenTelemetry's FastAPI instrumentation below, when tracing is on;
        # FastAPI's own would trace each dependency too.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.include_router(get_router(config))
    add_docs(app)
    if tracing.enabled():
        # Each request's server span (a client's traceparent continued); probes and
        # scrapes are not traced, nor each ASGI message of a request.
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app, excluded_urls="/health,/ready,/metrics,/scaling", exclude_spans=["receive", "send"]
        )
    return app


DOCS_ASSETS = "/docs-assets"


def add_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc with their scripts served by the API itself, not a
    CDN: the interactive docs work on a GPU box without internet."""
    static = resources.files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(static)), name="docs-assets")
    title = app.title

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{title} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
