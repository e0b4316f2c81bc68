"""What every provider implements: send one rendered request, return the reply or raise."""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Protocol

from pydantic import BaseModel

from miko_assets.llm.models import LLMRequest

# Normalised finish reasons. Providers map their own vocabulary onto these; the runner records
# the last three as failures with that reason, keeping the raw text.
FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_CONTENT_FILTER = "content_filter"
FINISH_REFUSAL = "refusal"
FAILED_FINISHES = frozenset({FINISH_LENGTH, FINISH_CONTENT_FILTER, FINISH_REFUSAL})

# Key-shaped tokens (OpenAI `sk-...`, Anthropic `sk-ant-...`), even partly masked, as some
# servers echo them back in 401 bodies.
_KEY_PATTERN = re.compile(r"\bsk-[A-Za-z0-9_\-*.]{6,}")
_MAX_MESSAGE_CHARS = 500


class ProviderReply(BaseModel):
    """The provider's answer before validation, caching and costing."""

    text: str | None
    finish_reason: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    # Prompt tokens written to the provider's prompt cache (Anthropic bills them above input).
    tokens_cache_write: int = 0
    provider_request_id: str | None = None
    raw: dict[str, Any] | None = None


class ProviderError(Exception):
    """A failed call. The runner retries `retryable` ones (429, 5xx, timeouts, connection)."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        retryable: bool = False,
        retry_after_s: float | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.status_code = status_code


class Provider(Protocol):
    """A way of running an `LLMRequest`. Implementations must never log or return API keys.

    A provider whose `send` raises a `timeout` error once `timeout_s` has passed, whatever the
    server does, may say so with `enforces_timeout = True`: the runner then sets no timer of
    its own around each attempt (one timer per attempt is cheaper at high concurrency).
    """

    name: str

    async def send(self, request: LLMRequest, timeout_s: float) -> ProviderReply: ...

    async def aclose(self) -> None: ...


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with the given secrets and anything shaped like an API key masked, and bounded."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _KEY_PATTERN.sub("sk-***", text)
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[:_MAX_MESSAGE_CHARS] + "..."


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP date)."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_body_message(body: Any, fallback: str) -> str:
    """The human message of an API error body (`{"error": {"message": ...}}`), else `fallback`."""
    # Some SDKs hand over the whole body, others only its `error` object.
    error = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return str(error) if isinstance(error, str) else fallback


def error_from_status(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> ProviderError:
    """Classify an HTTP error status: 408/409/429/5xx are retryable, other 4xx are not."""
    if status in (401, 403):
        kind = "auth"
    elif status == 429:
        kind = "rate_limited"
    elif status == 408:
        kind = "timeout"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "bad_request"
    retryable = status in (408, 409, 429) or status >= 500
    return ProviderError(
        kind,
        f"HTTP {status}: {message}",
        retryable=retryable,
        retry_after_s=parse_retry_after(headers) if retryable else None,
        status_code=status,
    )


@contextmanager
def sdk_errors(sdk: ModuleType, timeout_s: float, secret: str | None, answer: str) -> Iterator[None]:
    """Raise the SDK's (`openai` or `anthropic`: they share their error classes) exceptions as
    `ProviderError`s, with `secret` masked; `answer` names what a valid body is."""
    try:
        yield
    except sdk.APIStatusError as exc:
        message = redact(error_body_message(exc.body, exc.message), [secret])
        raise error_from_status(exc.status_code, message, exc.response.headers) from None
    except sdk.APITimeoutError:
        raise ProviderError("timeout", f"no answer within {timeout_s:g}s", retryable=True) from None
    except sdk.APIConnectionError as exc:
        raise ProviderError("connection", redact(str(exc), [secret]), retryable=True) from None
    except (sdk.APIResponseValidationError, ValueError):
        raise ProviderError(
            "malformed_response", f"response body is not a valid {answer}", retryable=True
        ) from None
