"""Waits until every part answers, prints where to reach them, then stays up.

Exits non-zero (and so stops the others) when a part does not come up in time.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import httpx

from local_stack.settings import LocalStack
from shared.config import Config

START_TIMEOUT = 180.0


def wait_http(name: str, url: str, deadline: float, auth: tuple[str, str] | None = None) -> None:
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2, auth=auth).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    sys.exit(f"{name} did not answer {url} within {START_TIMEOUT:g}s")


def wait_worker(deadline: float) -> None:
    from tasks.app import celery_app

    while time.monotonic() < deadline:
        try:
            if celery_app.control.ping(timeout=1.0):
                return
        except Exception:  # noqa: BLE001 - the broker may not be up yet
            time.sleep(0.5)
    sys.exit(f"no worker answered within {START_TIMEOUT:g}s")


def banner(config: Config, api: str, flower: str) -> str:
    """Where each part is, and a first request."""
    keyed = bool(config.api_keys) or bool(config.api_keys_file)
    sign_in = "sign in with an API key" if keyed else "no API keys configured: any key signs in"
    return (
        "\n"
        "  llm-api is up\n"
        f"  API      {api}\n"
        f"  console  {api}/console  ({sign_in})\n"
        f"  docs     {api}/docs\n"
        f"  Flower   {flower}\n"
        f"  model    {config.inner_llm_url}\n"
        "\n"
        f"  curl -X POST {api}/generate -H 'Content-Type: application/json' \\\n"
        """       -d '{"content": "What is AI?", "meta": {"tokens_limit": 64}}'\n"""
        "\n"
        "  Ctrl-C stops everything.\n"
    )


def main() -> None:
    config, local = Config.read_from_env(), LocalStack.read_from_env()
    deadline = time.monotonic() + START_TIMEOUT
    api = f"http://{local.api_host}:{local.api_port}"
    flower = f"http://{local.flower_host}:{local.flower_port}"
    embedded = [f"http://127.0.0.1:{local.embedded_model_port + n}" for n in range(local.model_servers)]
    for url in config.inner_llm_urls:
        if url in embedded:
            wait_http("model server", f"{url}/health", deadline)
    wait_http("API", f"{api}/health", deadline)
    auth = None
    if local.flower_basic_auth:
        user, _, password = local.flower_basic_auth.get_secret_value().partition(":")
        auth = (user, password)
    wait_http("Flower", f"{flower}/healthcheck", deadline, auth)
    wait_worker(deadline)
    print(banner(config, api, flower), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.pause()


if __name__ == "__main__":
    main()
