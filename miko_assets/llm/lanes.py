"""Per-provider pools of workers that take work while the batch is still adding to it.

A batch looks its requests up in the cache a chunk at a time and hands each chunk's misses to
`Lanes.put` at once, so the first calls are on the wire while the rest is still being rendered
and looked up. Each provider gets its own queue and at most its concurrency in workers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")

_DONE = object()


class Lanes(Generic[T]):
    """Runs `work(item)` for every item put, at most `concurrency_for(provider)` at a time per provider."""

    def __init__(
        self,
        concurrency_for: Callable[[str], int],
        work: Callable[[T], Awaitable[None]],
        on_drained: Callable[[], None] = lambda: None,
    ) -> None:
        """`on_drained` is called once, when every item is taken by a worker and no more will come
        (the batch's last round of calls is in flight)."""
        self._concurrency_for = concurrency_for
        self._work = work
        self._on_drained = on_drained
        self._waiting = 0
        self._joined = False
        self._queues: dict[str, asyncio.Queue] = {}
        self._workers: dict[str, list[asyncio.Task[None]]] = {}

    def put(self, provider: str, item: T) -> None:
        """Queue `item`; a worker is added while the provider has fewer than its concurrency."""
        queue = self._queues.get(provider)
        if queue is None:
            queue = self._queues[provider] = asyncio.Queue()
            self._workers[provider] = []
        queue.put_nowait(item)
        self._waiting += 1
        workers = self._workers[provider]
        if len(workers) < self._concurrency_for(provider):
            workers.append(asyncio.create_task(self._worker(queue)))

    async def join(self) -> None:
        """Wait until every item put so far is done; nothing may be put afterwards."""
        self._joined = True
        if self._waiting == 0:
            self._on_drained()
        for provider, queue in self._queues.items():
            for _ in self._workers[provider]:
                queue.put_nowait(_DONE)
        await asyncio.gather(*(task for tasks in self._workers.values() for task in tasks))

    async def cancel(self) -> None:
        """Stop every worker (after an error while the batch was still being looked up)."""
        tasks = [task for tasks in self._workers.values() for task in tasks if not task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _worker(self, queue: asyncio.Queue) -> None:
        while (item := await queue.get()) is not _DONE:
            self._waiting -= 1
            if self._waiting == 0 and self._joined:
                self._on_drained()
            await self._work(item)
