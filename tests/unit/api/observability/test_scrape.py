"""A scrape of /metrics (api/observability/scrape.py): the broker's depths and dead
letters, the workers' webhook counts from Redis, the batches' lines, the scaling signals
and the last readiness checks read at that moment; a part that cannot be read leaves its
figures out, not the scrape."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from api.observability import readiness as readiness_module
from api.observability.readiness import Readiness
from api.observability.scaling import Scaling
from api.observability.scrape import Scrape
from shared.contract.keys import webhook_count_field
from shared.registry import load_registry
from tests.unit.api.edge import running_parts

pytestmark = pytest.mark.unit


def test_a_scrape_reads_each_part_now_and_renders_them(monkeypatch: pytest.MonkeyPatch) -> None:
    real, answering = httpx.AsyncClient, httpx.MockTransport(lambda request: httpx.Response(200))
    monkeypatch.setattr(readiness_module.httpx, "AsyncClient", lambda **o: real(transport=answering, **o))

    async def main() -> None:
        async with running_parts() as parts:
            queue, dead = parts.config.queue_name, parts.config.dead_letter_queue
            parts.broker.depths[queue] = 4
            parts.broker.depths[dead] = 3
            parts.redis.hashes[parts.config.keys.webhook_counts] = {
                webhook_count_field("https://hooks", "gave_up").encode(): b"2"}  # fmt: skip
            scaling = Scaling(parts.config, load_registry(parts.config), parts.queue, parts.fair, parts.redis)  # type: ignore[arg-type]
            checking = Readiness(parts.redis, parts.queue, load_registry(parts.config))  # type: ignore[arg-type]
            scrape = Scrape(parts.config, parts.metrics, parts.queue, lambda: [queue], parts.redis, scaling,  # type: ignore[arg-type]
                            lambda: {("default", "waiting"): 9}, checking)  # fmt: skip
            text = (await scrape.render()).decode()
            assert f'llm_api_jobs_waiting{{queue="{queue}"}} 4.0' in text
            assert f'llm_api_dead_letters{{queue="{dead}"}} 3.0' in text
            assert f'llm_api_jobs_waiting{{queue="{dead}"}}' not in text  # not a queue of jobs waiting
            # The scrape waited for no round of checks, but started them: the next shows their parts.
            assert "llm_api_part_up{" not in text
            await checking.last()
            text = (await scrape.render()).decode()
            for line in ('llm_api_part_up{model="",part="broker"} 1.0',
                         'llm_api_part_up{model="",part="result_store"} 1.0',
                         'llm_api_part_up{model="default",part="model_server"} 1.0',
                         'llm_api_part_up{model="default",part="workers"} 0.0'):  # fmt: skip
                assert line in text, line
            assert 'llm_api_webhook_deliveries_total{endpoint="https://hooks",outcome="gave_up"} 2.0' in text
            assert 'llm_api_batch_lines{model="default",state="waiting"} 9.0' in text
            assert 'llm_api_model_jobs_waiting{model="default"} 4.0' in text
            parts.redis.down = True  # the scaling signals and webhook counts cannot be read: left out
            parts.broker.down = True
            text = (await scrape.render()).decode()
            assert f'llm_api_jobs_waiting{{queue="{queue}"}} -1.0' in text  # the broker's count: unknown
            assert "llm_api_dead_letters{" not in text  # no figure rather than -1
            await checking.close()
            assert "llm_api_model_jobs_waiting{model=" not in text and 'outcome="gave_up"' not in text

    asyncio.run(main())


def test_the_control_plane_database_is_a_part_shown_as_its_last_poll_found_it() -> None:
    async def main() -> None:
        async with running_parts() as parts:
            scaling = Scaling(parts.config, load_registry(parts.config), parts.queue, parts.fair, parts.redis)  # type: ignore[arg-type]
            checking = Readiness(parts.redis, parts.queue, load_registry(parts.config))  # type: ignore[arg-type]
            up = [True]
            scrape = Scrape(parts.config, parts.metrics, parts.queue, list, parts.redis, scaling,  # type: ignore[arg-type]
                            dict, checking, lambda: up[0])  # fmt: skip
            # Shown from the first scrape (no round of readiness checks needed), as it changes.
            assert 'llm_api_part_up{model="",part="database"} 1.0' in (await scrape.render()).decode()
            up[0] = False
            assert 'llm_api_part_up{model="",part="database"} 0.0' in (await scrape.render()).decode()
            # Not a readiness check: /ready does not fail for it (no request waits for it).
            report = await checking.last()
            assert report is not None and "database" not in report.checks
            await checking.close()

    asyncio.run(main())
