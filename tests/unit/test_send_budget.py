"""The ADS send budget: bytes in flight are bounded, released on answer, end or timeout."""

from __future__ import annotations

import asyncio

import pytest

from heliostat.xds.grpc.budget import SendBudget


def test_a_push_within_the_budget_is_not_delayed_and_release_gives_back() -> None:
    async def scenario() -> None:
        budget = SendBudget(limit=100, hold_s=60)
        first = await asyncio.wait_for(budget.take(60), 1)
        second = await asyncio.wait_for(budget.take(40), 1)
        assert budget.in_flight == 100
        first.release()
        first.release()  # once only
        assert budget.in_flight == 40
        second.release()
        assert budget.in_flight == 0

    asyncio.run(scenario())


def test_a_stream_waits_until_an_answer_frees_room() -> None:
    async def scenario() -> None:
        budget = SendBudget(limit=100, hold_s=60)
        held = await budget.take(80)
        waiting = asyncio.create_task(budget.take(30))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # 80 + 30 does not fit
        held.release()
        grant = await asyncio.wait_for(waiting, 1)
        assert budget.in_flight == 30
        grant.release()

    asyncio.run(scenario())


def test_a_response_larger_than_the_budget_goes_alone() -> None:
    async def scenario() -> None:
        budget = SendBudget(limit=100, hold_s=60)
        small = await budget.take(10)
        huge = asyncio.create_task(budget.take(1_000))
        await asyncio.sleep(0.05)
        assert not huge.done()
        small.release()
        grant = await asyncio.wait_for(huge, 1)
        assert budget.in_flight == 100  # it holds the whole budget
        grant.release()

    asyncio.run(scenario())


def test_a_node_that_never_answers_gives_its_bytes_back_after_the_hold_time() -> None:
    async def scenario() -> None:
        budget = SendBudget(limit=100, hold_s=0.1)
        await budget.take(100)  # never released by its stream
        grant = await asyncio.wait_for(budget.take(50), 2)
        grant.release()

    asyncio.run(scenario())


def test_a_budget_needs_positive_bounds() -> None:
    with pytest.raises(ValueError, match="positive"):
        SendBudget(limit=0)


def test_waiters_are_served_in_order_and_a_cancelled_one_gives_way() -> None:
    async def scenario() -> None:
        budget = SendBudget(limit=100, hold_s=60)
        held = await budget.take(100)
        big = asyncio.create_task(budget.take(90))
        await asyncio.sleep(0)
        small = asyncio.create_task(budget.take(10))
        await asyncio.sleep(0.05)
        assert not small.done()  # it does not overtake the stream waiting before it
        big.cancel()
        await asyncio.sleep(0)
        held.release()
        grant = await asyncio.wait_for(small, 1)
        assert budget.in_flight == 10
        grant.release()

    asyncio.run(scenario())
