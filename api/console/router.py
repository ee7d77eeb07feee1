"""``/console``: the gateway's web console, a page of the API's own with its script and
style under ``/console/static/`` (nothing from another origin: it works without internet,
as ``/docs`` does).

The page holds no figure and needs no key to load: it signs in with an API key the
person types, kept in the tab's session storage, and asks the API's own endpoints with
it (``Authorization: Bearer``), so a key sees in the console what it may read through
the API, and nothing more. Its Content-Security-Policy lets it load and ask nothing but
this origin, and run no inline script."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

STATIC = "/console/static"

# Scripts, styles, images and requests from this origin only; no inline script, no
# framing (clickjacking), no form posted elsewhere; nothing of the page in a referrer.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; font-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


_RAW_HEADERS = [(name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]


class _Assets(StaticFiles):
    """The console's files, with its security headers."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_RAW_HEADERS]
            await send(message)

        await super().__call__(scope, receive, with_headers)


def add_console(app: FastAPI) -> None:
    """The console's page at ``/console`` and its files under ``/console/static``."""
    folder = resources.files("api.console") / "static"
    page = (folder / "console.html").read_text(encoding="utf-8")
    app.mount(STATIC, _Assets(directory=str(folder)), name="console-static")
    router = APIRouter(include_in_schema=False)

    @router.get("/console")
    async def console() -> HTMLResponse:
        # The page is the same for everyone (no figure, no key in it): what it shows it
        # asks the API for, with the key the person signs in with.
        return HTMLResponse(page, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})

    app.include_router(router)
