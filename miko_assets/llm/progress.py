"""How far one LLM batch has got, told to a run's log: calls done out of the total, cache hits,
failures so far, calls per second and time left, every few seconds or every tenth of the batch
(whichever comes first). Retries, rate-limit pauses and repairs are told as warnings.

Knows nothing of Dagster: the caller passes the log's `info` and `warning` (an asset passes
`context.log`'s, so the lines show in the run's log in the UI).
"""

from __future__ import annotations

import time
from collections.abc import Callable

Say = Callable[[str], None]


class BatchProgress:
    """The progress lines of one batch of `stage`."""

    def __init__(
        self,
        stage: str,
        info: Say,
        warning: Say,
        *,
        every_s: float = 5.0,
        every_share: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stage, self._info, self._warning = stage, info, warning
        self.every_s, self.every_share, self._clock = every_s, every_share, clock
        self.total = self.cache_hits = self.done = self.failed = 0
        self._started = self._last_time = clock()
        self._last_done = 0

    def start(self, total: int, cache_hits: int) -> None:
        """The batch has `total` distinct calls, `cache_hits` of them answered from the cache."""
        self.total, self.cache_hits = total, cache_hits
        self.done = cache_hits
        self._started = self._last_time = self._clock()
        self._last_done = self.done
        self._info(f"{self.stage}: {total} calls, {cache_hits} from the cache, {total - cache_hits} to make")

    def call_done(self, failed: bool) -> None:
        """One more call answered (or given up on)."""
        self.done += 1
        self.failed += failed
        now = self._clock()
        step = max(1, round(self.total * self.every_share))
        if self.done == self.total or now - self._last_time >= self.every_s or self.done - self._last_done >= step:
            self._last_time, self._last_done = now, self.done
            self._info(self.line(now))

    def warning(self, message: str) -> None:
        """A retry, a rate-limit pause or a repair."""
        self._warning(f"{self.stage}: {message}")

    def line(self, now: float) -> str:
        made = self.done - self.cache_hits
        elapsed = now - self._started
        rate = made / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        eta = f", about {_duration(left / rate)} left" if left and rate > 0 else ""
        return (
            f"{self.stage}: {self.done}/{self.total} calls ({self.cache_hits} from the cache, "
            f"{self.failed} failed), {rate:.2f} calls/s{eta}"
        )


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
