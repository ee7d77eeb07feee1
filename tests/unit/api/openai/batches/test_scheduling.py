"""Batches' lines hold few worker slots beside interactive requests (api/openai/batches/scheduling.py)."""

from __future__ import annotations

import asyncio

import pytest

from api.openai.batches.scheduling import LineScheduler

pytestmark = pytest.mark.unit


async def _hold(scheduler: LineScheduler, model: str, started: list[str], release: asyncio.Event, name: str) -> None:
    async with scheduler.slot(model):
        started.append(name)
        await release.wait()


def test_at_most_in_flight_lines_of_a_model_run_at_once_and_models_do_not_share_slots() -> None:
    async def main() -> tuple[list[str], list[str]]:
        scheduler = LineScheduler(in_flight=2, beside_interactive=1, awaiting=lambda: 0)
        started: list[str] = []
        release = asyncio.Event()
        tasks = [asyncio.create_task(_hold(scheduler, "a", started, release, f"a{n}")) for n in range(3)]
        tasks.append(asyncio.create_task(_hold(scheduler, "b", started, release, "b0")))
        await asyncio.sleep(0.05)
        before = sorted(started)
        assert scheduler.lines == 3 and scheduler.running("a") == 2
        release.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 2)
        assert scheduler.lines == 0 and scheduler.running("a") == 0
        return before, sorted(started)

    before, after = asyncio.run(main())
    assert before == ["a0", "a1", "b0"] and after == ["a0", "a1", "a2", "b0"]


def test_beside_interactive_requests_fewer_lines_start_until_those_requests_end() -> None:
    async def main() -> list[int]:
        interactive = 1  # jobs the process awaits besides its lines
        scheduler = LineScheduler(in_flight=4, beside_interactive=1, awaiting=lambda: interactive + scheduler.lines)
        started: list[str] = []
        release = asyncio.Event()
        tasks = [asyncio.create_task(_hold(scheduler, "a", started, release, f"a{n}")) for n in range(3)]
        await asyncio.sleep(0.05)
        seen = [len(started)]  # one line beside the interactive request
        interactive = 0  # the interactive request is answered
        await asyncio.sleep(0.05)
        seen.append(len(started))  # the others start
        release.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 2)
        return seen

    assert asyncio.run(main()) == [1, 3]
