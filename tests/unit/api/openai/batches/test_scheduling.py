"""Batches' lines hold few worker slots beside interactive requests (api/openai/batches/scheduling.py)."""

from __future__ import annotations

import asyncio

import pytest

from api.openai.batches.scheduling import LineScheduler

pytestmark = pytest.mark.unit


async def _hold(scheduler: LineScheduler, model: str, started: list[str], release: asyncio.Event, name: str) -> None:
    async with scheduler.slot(model, name.rstrip("0123456789")):
        started.append(name)
        with scheduler.awaiting():
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
        scheduler = LineScheduler(in_flight=4, beside_interactive=1, awaiting=lambda: interactive + scheduler.awaited)
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


def test_a_freed_slot_goes_to_the_next_tenant_in_turn_not_to_the_tenant_with_more_batches_waiting() -> None:
    """Alpha's three batches each wait with a line; beta's one batch's line comes after
    them. Beta's line takes the second slot freed, not the fourth."""

    async def main() -> list[str]:
        scheduler = LineScheduler(in_flight=1, beside_interactive=1, awaiting=lambda: 0)
        started: list[str] = []
        releases = {name: asyncio.Event() for name in ("alpha0", "alpha1", "alpha2", "alpha3", "beta0")}

        async def hold(name: str) -> None:
            async with scheduler.slot("m", name.rstrip("0123456789")):
                started.append(name)
                await releases[name].wait()

        tasks = [asyncio.create_task(hold(f"alpha{n}")) for n in range(4)]
        await asyncio.sleep(0.02)
        tasks.append(asyncio.create_task(hold("beta0")))
        await asyncio.sleep(0.02)
        while len(started) < 5:
            releases[started[-1]].set()
            await asyncio.sleep(0.02)
        releases[started[-1]].set()
        await asyncio.wait_for(asyncio.gather(*tasks), 2)
        return started

    assert asyncio.run(main()) == ["alpha0", "alpha1", "beta0", "alpha2", "alpha3"]


def test_a_line_cancelled_while_it_waits_leaves_its_turn_and_the_slot_to_the_others() -> None:
    async def main() -> list[str]:
        scheduler = LineScheduler(in_flight=1, beside_interactive=1, awaiting=lambda: 0)
        started: list[str] = []
        release = asyncio.Event()

        async def hold(name: str) -> None:
            async with scheduler.slot("m", name.rstrip("0123456789")):
                started.append(name)
                await release.wait()

        first = asyncio.create_task(hold("alpha0"))
        await asyncio.sleep(0.02)
        cancelled = asyncio.create_task(hold("beta0"))
        await asyncio.sleep(0.02)
        cancelled.cancel()
        await asyncio.sleep(0.02)
        release.set()
        await asyncio.wait_for(first, 2)
        # The slot is free again: a later line takes it at once.
        await asyncio.wait_for(hold("gamma0"), 2)
        return started

    assert asyncio.run(main()) == ["alpha0", "gamma0"]


def test_a_line_answered_and_writing_its_record_does_not_hide_an_interactive_request() -> None:
    """a0 awaits its result, a1 was answered and still holds its slot (its record being
    written): with one interactive request awaited besides, a2 does not start."""

    async def main() -> list[str]:
        interactive = 0  # the process's own clients' jobs it awaits (the runner counts lines too)
        scheduler = LineScheduler(in_flight=4, beside_interactive=1, awaiting=lambda: interactive + scheduler.awaited)
        started: list[str] = []
        release, written = asyncio.Event(), asyncio.Event()

        async def answered(name: str) -> None:
            async with scheduler.slot("m", "alpha"):
                started.append(name)
                await written.wait()  # awaited no more: writing its record

        tasks = [asyncio.create_task(_hold(scheduler, "m", started, release, "alpha0"))]
        tasks.append(asyncio.create_task(answered("alpha1")))
        await asyncio.sleep(0.02)
        interactive = 1
        tasks.append(asyncio.create_task(_hold(scheduler, "m", started, release, "alpha2")))
        await asyncio.sleep(0.05)
        seen = list(started)
        release.set()
        written.set()
        await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return seen

    assert asyncio.run(main()) == ["alpha0", "alpha1"]
