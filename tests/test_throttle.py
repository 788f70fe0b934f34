"""Coalescing and pacing shared by the chat adapters and Socket.IO."""

from __future__ import annotations

import asyncio

from core.throttle import Coalescer, RetryLater, SendBudget


async def test_many_pokes_one_flush_per_interval() -> None:
    flushed: list[float] = []
    loop = asyncio.get_running_loop()

    async def flush(key: str) -> None:
        flushed.append(loop.time())

    c = Coalescer(0.2, flush)
    for _ in range(100):
        c.poke("raid:1")
    await c.drain()
    assert len(flushed) == 1
    c.poke("raid:1")
    c.poke("raid:1")
    await c.drain()
    assert len(flushed) == 2 and flushed[1] - flushed[0] >= 0.19


async def test_a_poke_during_a_flush_is_not_lost() -> None:
    seen: list[int] = []
    state = {"v": 0}

    async def flush(key: str) -> None:
        value = state["v"]
        await asyncio.sleep(0.05)  # the platform call
        seen.append(value)

    c = Coalescer(0.05, flush)
    c.poke("k")
    await asyncio.sleep(0.02)  # flush under way with v=0
    state["v"] = 1
    c.poke("k")
    await c.drain()
    assert seen == [0, 1]


async def test_retry_later_defers_and_retries() -> None:
    calls: list[float] = []
    loop = asyncio.get_running_loop()

    async def flush(key: str) -> None:
        calls.append(loop.time())
        if len(calls) == 1:
            raise RetryLater(0.15)

    c = Coalescer(0.01, flush)
    c.poke("k")
    await c.drain()
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.14


async def test_send_budget_caps_a_rolling_minute() -> None:
    now = [0.0]
    budget = SendBudget(3, time=lambda: now[0])
    for _ in range(3):
        await budget.wait("chat")
    assert budget.available("chat") == 0
    waiter = asyncio.create_task(budget.wait("chat"))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    now[0] = 60.5
    await asyncio.wait_for(waiter, 2)
    assert budget.available("chat") == 2
