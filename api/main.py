"""The composition root of the API: `get_router(config)` builds the API process's parts
and its routers, and `create_app` the app (``uvicorn --factory api.main:create_app``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from api.admin.router import admin_router
from api.admin.serving import ControlPlane
from api.admin.usage import UsageReports
from api.admin.usage_router import usage_reports_router
from api.anthropic.http import AnthropicRoute
from api.anthropic.messages.router import messages_router
from api.anthropic.messages.serving import Messages
from api.console.router import add_console
from api.http.route_class import Access, Edge, GatewayRoute
from api.http.unread_body import CloseAfterUnreadBody
from api.native.dead_letters_router import dead_letters_router
from api.native.jobs_router import jobs_router
from api.native.models_router import models_router
from api.native.router import ERROR_RESPONSES, spec_router
from api.native.serving import SpecJobs
from api.observability.router import operators_router, probes_router
from api.openai.batches.router import batches_router
from api.openai.chat.router import chat_router
from api.openai.chat.serving import OpenAIJobs
from api.openai.completions.router import completions_router
from api.openai.conversations.router import conversations_router
from api.openai.conversations.serving import Conversations
from api.openai.embeddings.router import embeddings_router
from api.openai.embeddings.serving import Embeddings
from api.openai.files.router import FilesRoute, files_router
from api.openai.http import OpenAIRoute
from api.openai.models.router import models_router as openai_models_router
from api.openai.models.serving import ServedModels
from api.openai.responses.compact import Compactions, compact_router
from api.openai.responses.router import responses_router
from api.openai.responses.sealing import CompactionSeal
from api.openai.responses.serving import Responses
from api.openai.responses.store import ResponseStore
from api.openai.responses.websocket import ResponsesWebSocket, websocket_router
from api.services import Services
from api.tenancy.tenants_router import tenants_router
from api.tenancy.usage_router import usage_router
from shared.config import Config
from shared.telemetry import tracing
from shared.telemetry.logs import use_json


def get_router(config: Config) -> APIRouter:
    """Every endpoint of the gateway, for `config`: the spec's, OpenAI's, Anthropic's
    Messages, jobs, files, batches, usage, models, operations and the organization's
    (projects and keys), each router given the parts it uses. It
    brings its own lifespan (connections to the broker and Redis), which FastAPI runs
    when the router is included in an app (the spec's usage snippet)."""
    parts = Services.build(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with parts.running():
            yield

    edge = Edge(config, parts.guard, parts.metrics)
    # Every endpoint but the probes needs a key (when keys are configured) and is rate
    # limited; the operators' (every tenant's figures) an admin key or METRICS_TOKEN; the
    # admins' (dead letters: jobs' requests, and replaying them) an admin key.
    native, openai = GatewayRoute.at(edge), OpenAIRoute.at(edge)
    spec = SpecJobs(config, parts.routing, parts.runner)
    jobs = OpenAIJobs(config, parts.routing, parts.runner)
    records = ResponseStore(config, parts.redis, parts.kept)
    seal = CompactionSeal(config)
    conversations = Conversations(parts.conversations, seal)
    responses = Responses(
        config, parts.routing, parts.runner, parts.store, records, parts.registry, parts.guard.tenants, parts.events,
        parts.counter, seal, conversations,
    )  # fmt: skip
    compactions = Compactions(config, parts.routing, parts.runner, responses, seal)
    sockets = ResponsesWebSocket(edge, parts.models.responses, responses, parts.runner)
    messages = Messages(config, parts.routing, parts.runner, parts.registry, parts.counter)
    outer = APIRouter(lifespan=lifespan)
    outer.include_router(probes_router(parts.readiness, parts.guard))
    routers = [
        spec_router(parts.models, spec, native),
        chat_router(parts.models, jobs, config, openai),
        completions_router(parts.models, jobs, openai),
        embeddings_router(parts.models, Embeddings(config, parts.routing, parts.runner), openai),
        openai_models_router(ServedModels(config, parts.routing, parts.runner), openai),
        compact_router(compactions, openai),
        responses_router(parts.models, responses, openai),
        websocket_router(sockets),
        conversations_router(conversations, openai),
        messages_router(parts.models, messages, AnthropicRoute.at(edge)),
        files_router(parts.files, FilesRoute.at(edge)),
        batches_router(parts.batches, openai, parts.quotas),
        jobs_router(parts.store, parts.events, parts.guard.tenants, native),
        models_router(parts.routing, native),
        usage_router(config, parts.guard.tenants, parts.redis, native),
        tenants_router(parts.guard.tenants, native),
        operators_router(parts.scrape, parts.scaling, GatewayRoute.at(edge, Access.OPERATOR)),
        dead_letters_router(config, GatewayRoute.at(edge, Access.TENANT_ADMIN)),
        admin_router(
            ControlPlane(config, parts.control, parts.control_sync, parts.guard.tenants, parts.registry, parts.spend),
            OpenAIRoute.at(edge, Access.ADMIN),
        ),
        usage_reports_router(
            UsageReports(config, parts.usage_history, parts.redis, parts.registry, call=parts.control_sync.call),
            OpenAIRoute.at(edge, Access.ADMIN),
        ),
    ]
    for router in routers:
        outer.include_router(router, responses=ERROR_RESPONSES)
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
    add_console(app)
    # Any answer given before its body was read whole (a 404, a 405, a refusal) ends its connection.
    app.add_middleware(CloseAfterUnreadBody)
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
