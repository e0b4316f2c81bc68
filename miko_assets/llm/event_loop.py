"""The bridge from synchronous code to the async LLM layer: a fresh event loop per call."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def run_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on a new event loop (in a worker thread if this thread runs a loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_new_loop(factory)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_run_new_loop, factory).result()


def _run_new_loop(factory: Callable[[], Awaitable[T]]) -> T:
    box: list[T] = []

    async def main() -> None:
        box.append(await factory())

    # The result goes through `box`, not the task: on Python 3.11 the runner reprs its main
    # task while restoring the SIGINT handler, and the repr of a large result costs seconds.
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())
    return box[0]


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (optional): it spends less CPU per call than asyncio's,
    and client CPU is what limits throughput at high concurrency."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
