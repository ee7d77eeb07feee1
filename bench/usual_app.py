"""The comparison: FastAPI + Celery written the way most tutorials do it.

A sync endpoint (so FastAPI runs it on its thread pool) that calls ``.delay()`` and
blocks on ``AsyncResult.get()``; a prefork worker with the default concurrency (one
process per core), calling the model server with a plain httpx request per job.

    uvicorn bench.usual_app:app
    celery -A bench.usual_app:celery worker
"""

from __future__ import annotations

from typing import Any

import httpx
from celery import Celery
from fastapi import FastAPI

from shared.config import Config

config = Config.read_from_env()

celery = Celery("usual", broker=config.broker_url, backend=config.redis_url)
celery.conf.task_default_queue = config.queue_name  # only so bench runs do not share a queue

app = FastAPI()


@celery.task(name="usual.generate")
def generate(content: str, meta: dict[str, Any]) -> str:
    response = httpx.post(
        f"{config.inner_llm_url}/v1/chat/completions",
        json={
            "model": meta.get("model") or "fake-model",
            "messages": [{"role": "user", "content": content}],
            "temperature": meta.get("temperature", 0.2),
            "max_tokens": meta.get("tokens_limit", 8096),
        },
        timeout=600,
    )
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"]


@app.post("/generate")
def generate_endpoint(body: dict[str, Any]) -> dict[str, str]:
    result = generate.delay(body["content"], body.get("meta", {}))
    return {"content": result.get(timeout=600)}
