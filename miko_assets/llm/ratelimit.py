"""Requests-per-minute and tokens-per-minute limits for one provider, as token buckets."""

from __future__ import annotations

import asyncio
import time

from miko_assets.llm.config import ProviderLimits


class TokenBucket:
    """Refills `per_minute / 60` units a second up to one second's worth, so calls are paced evenly.

    A draw larger than the capacity is allowed once the bucket is full and leaves it in debt,
    which keeps the average rate right for requests bigger than a second's allowance.
    """

    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.updated = time.monotonic()

    def wait_s(self, amount: float, now: float) -> float:
        """Seconds until `amount` can be drawn (0 if now); refills as a side effect."""
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def draw(self, amount: float) -> None:
        self.level -= amount


class RateLimiter:
    """Paces one provider's calls; `pause` holds every call back (after a 429 with Retry-After)."""

    def __init__(self, limits: ProviderLimits) -> None:
        self._requests = TokenBucket(limits.rpm) if limits.rpm else None
        self._tokens = TokenBucket(limits.tpm) if limits.tpm else None
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def acquire(self, tokens: int) -> None:
        """Wait until one request of about `tokens` tokens may be sent, then account for it."""
        if (
            self._requests is None
            and self._tokens is None
            and self._paused_until <= time.monotonic()
        ):
            return
        async with self._lock:  # first come, first served
            while True:
                now = time.monotonic()
                wait = self._paused_until - now
                if self._requests is not None:
                    wait = max(wait, self._requests.wait_s(1, now))
                if self._tokens is not None:
                    wait = max(wait, self._tokens.wait_s(tokens, now))
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            if self._requests is not None:
                self._requests.draw(1)
            if self._tokens is not None:
                self._tokens.draw(tokens)
