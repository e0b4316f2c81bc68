"""Sending one request under the retry policy: paced by the provider's rate limiter, retried
with exponential backoff and jitter (or the server's Retry-After), each attempt timed out."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from miko_assets.llm.config import RunnerConfig
from miko_assets.llm.models import LLMRequest
from miko_assets.llm.provider_interface import Provider, ProviderError, ProviderReply
from miko_assets.llm.ratelimit import RateLimiter

log = logging.getLogger(__name__)

# Headroom over the per-attempt timeout before the runner itself gives up on a provider that
# does not honour it (providers enforce `timeout_s` themselves; those that declare
# `enforces_timeout` get no timer from the runner).
TIMEOUT_GRACE_S = 5.0


@dataclass(slots=True)
class Sent:
    """How sending ended: a reply, or (without one) the last error and why it was not retried."""

    reply: ProviderReply | None
    attempts: int
    # Of the answered attempt; on failure, of all attempts and the waits between them.
    latency_ms: float
    error_kind: str = ""
    error: str = ""


async def send_with_retries(
    provider: Provider,
    limiter: RateLimiter,
    request: LLMRequest,
    tokens: int,
    config: RunnerConfig,
    key: str,
    warn: Callable[[str], None] = log.info,
) -> Sent:
    """Send `request` (about `tokens` tokens, prompt and answer) until it is answered or an
    error may not be retried; never raises for a failed call. `key` names the call in the
    lines `warn` is told (each retry and rate-limit pause)."""
    timeout_s = config.timeout_for(request.provider)
    guarded = not getattr(provider, "enforces_timeout", False)
    attempts = 0
    started = time.perf_counter()
    while True:
        attempts += 1
        await limiter.acquire(tokens)
        sent = time.perf_counter()
        try:
            if guarded:
                async with asyncio.timeout(timeout_s + TIMEOUT_GRACE_S):
                    reply = await provider.send(request, timeout_s)
            else:
                reply = await provider.send(request, timeout_s)
            return Sent(reply, attempts, (time.perf_counter() - sent) * 1000)
        except ProviderError as exc:
            error = exc
        except TimeoutError:
            error = ProviderError("timeout", f"no answer within {timeout_s:g}s", retryable=True)
        except Exception as exc:  # noqa: BLE001  (a provider bug is this request's failure)
            error = ProviderError("provider_error", f"{type(exc).__name__}: {exc}")
        delay, reason = retry_delay(error, attempts, config)
        if delay is None:
            latency_ms = (time.perf_counter() - started) * 1000
            return Sent(None, attempts, latency_ms, error.kind, f"{error.message}{reason}")
        if error.retry_after_s is not None:
            limiter.pause(delay)
            warn(f"{request.provider} asked to wait (Retry-After): its calls pause {delay:.1f}s")
        warn(f"call {key[:12]}: {error}; retry {attempts} in {delay:.2f}s")
        await asyncio.sleep(delay)


def retry_delay(
    error: ProviderError, attempts: int, config: RunnerConfig
) -> tuple[float | None, str]:
    """Seconds to wait before the next attempt, or `None` and why there is none."""
    if not error.retryable:
        return None, ""
    if attempts >= config.max_attempts:
        return None, f" (gave up after {attempts} attempts)"
    if error.retry_after_s is not None:
        if error.retry_after_s > config.max_retry_after_s:
            too_long = (
                f" (Retry-After {error.retry_after_s:g}s is longer than "
                f"{config.max_retry_after_s:g}s)"
            )
            return None, too_long
        # A little jitter so workers told to wait the same time do not return together.
        return error.retry_after_s * random.uniform(1.0, 1.2), ""
    backoff = min(config.backoff_max_s, config.backoff_base_s * 2 ** (attempts - 1))
    return backoff * random.uniform(0.5, 1.0), ""
