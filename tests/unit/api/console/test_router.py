"""The console's page and files (api/console/router.py): served by the API itself, with
a Content-Security-Policy that lets the page load and ask nothing but its own origin;
the page names only files that are there."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.console.router import add_console

pytestmark = pytest.mark.unit


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    add_console(app)
    return TestClient(app)


def test_the_page_and_its_files_come_from_the_api_with_its_policy(client: TestClient) -> None:
    page = client.get("/console")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    for rule in ("default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"):
        assert rule in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert page.headers["cache-control"] == "no-cache" and page.headers["referrer-policy"] == "no-referrer"
    assets = re.findall(r'(?:src|href)="(/console/[^"]+)"', page.text)
    assert {"/console/static/console.js", "/console/static/console.css"} <= set(assets)
    for asset in assets:
        served = client.get(asset)
        assert served.status_code == 200 and served.content, asset
        assert served.headers["content-security-policy"] == policy and served.headers["x-frame-options"] == "DENY"
    # Nothing of another origin, no inline script or style for the policy to refuse.
    assert not re.search(r"(?:src|href)=\"(?!/console/|#)", page.text)
    assert "<script>" not in page.text and " style=" not in page.text


def test_a_file_that_is_not_the_consoles_is_not_found(client: TestClient) -> None:
    assert client.get("/console/static/../router.py").status_code == 404
    assert client.get("/console/static/nothing.js").status_code == 404
