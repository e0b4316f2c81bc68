"""What every provider implements: send one rendered request, return the reply or raise."""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel

from miko_assets.llm.models import LLMRequest


class ProviderReply(BaseModel):
    """The provider's answer before validation, caching and costing."""

    text: str | None
    finish_reason: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    provider_request_id: str | None = None
    raw: dict[str, Any] | None = None


class ProviderError(Exception):
    """A failed call. `retryable` errors (429, 5xx, timeouts, connection) are retried by the runner."""

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
    """A way of running an `LLMRequest`. Implementations must never log or return API keys."""

    name: str

    async def send(self, request: LLMRequest, timeout_s: float) -> ProviderReply: ...

    async def aclose(self) -> None: ...
