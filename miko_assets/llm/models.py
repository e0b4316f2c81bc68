"""Request and response models shared by every provider and stage."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CallStatus = Literal["ok", "failed"]
ImageDetail = Literal["low", "high", "auto"]
"""OpenAI's `detail` of an image: `low` is billed a fixed base, `high` by 512 px tiles."""
# The longest side, in pixels, of the images the imaging layer sends unless a stage says otherwise.
DEFAULT_IMAGE_SIDE = 1024


class ImageInput(BaseModel):
    """An image attached to a message, already verified and re-encoded.

    `sha256` (and `detail`, when set) enter the cache key; the bytes travel in `data_b64`.
    `width` and `height` are the encoded image's pixels, for pricing it by the provider's
    billing rule (unknown sizes are priced as the largest image the imaging layer sends).
    """

    model_config = ConfigDict(frozen=True)

    sha256: str
    media_type: str = "image/jpeg"
    data_b64: str = Field(repr=False)
    width: int | None = None
    height: int | None = None
    detail: ImageDetail | None = None

    def key(self) -> str | dict[str, str]:
        """The image in a request fingerprint: its sha, with its detail when one is set (so
        images sent without a detail keep the keys they always had)."""
        return self.sha256 if self.detail is None else {"sha256": self.sha256, "detail": self.detail}


class Message(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str
    images: tuple[ImageInput, ...] = ()


class GenerationParams(BaseModel):
    """Sampling parameters. `top_k` is sent where the provider has it (see the README)."""

    model_config = ConfigDict(frozen=True)

    temperature: float = 0.7
    max_tokens: int = 300
    top_p: float | None = None
    seed: int | None = None
    top_k: int | None = Field(default=None, ge=1)

    def fingerprint(self) -> dict[str, Any]:
        """The parameters as hashed; `top_k` only when set, so older hashes stay valid."""
        return self.model_dump(exclude={"top_k"} if self.top_k is None else set())

    def params_hash(self) -> str:
        return sha256_text(canonical_json(self.fingerprint()))[:16]


class Continuation(BaseModel):
    """The answer is the continuation of `prefix`, one short clause of `min_words` to `max_words`.

    The embedded model gets the prefix written at the start of its turn and a grammar for the
    clause; servers get the prompt (which shows the prefix), a stop at the line end and the
    token limit. The answer text is the continuation only.
    """

    model_config = ConfigDict(frozen=True)

    prefix: str
    min_words: int = Field(default=3, ge=1)
    max_words: int = Field(default=16, ge=1)


class LLMRequest(BaseModel):
    """One rendered call: what is sent, independent of how it is sent."""

    model_config = ConfigDict(frozen=True)

    provider: str
    model: str
    messages: tuple[Message, ...]
    params: GenerationParams = GenerationParams()
    output_schema: dict[str, Any] | None = None
    schema_name: str | None = None
    # The normalised base URL of an OpenAI-compatible server (`llm.endpoints`); None for
    # providers whose name fixes where calls go.
    endpoint: str | None = None
    continuation: Continuation | None = None

    def cache_key(self) -> str:
        """Content address: provider, endpoint, model, messages (images by sha), params, schema."""
        return sha256_text(self.request_json())

    def request_json(self) -> str:
        """The rendered request as stored in `llm_calls` (images by sha); its sha256 is the key."""
        return canonical_json(self.fingerprint())

    def fingerprint(self) -> dict[str, Any]:
        # Without an endpoint the key is the one requests had before endpoints were keyed.
        where = {"endpoint": self.endpoint} if self.endpoint is not None else {}
        continuation = (
            {"continuation": self.continuation.model_dump()} if self.continuation else {}
        )
        return {
            **where,
            **continuation,
            "provider": self.provider,
            "model": self.model,
            "messages": [
                {"role": m.role, "content": m.content, "images": [i.key() for i in m.images]}
                for m in self.messages
            ],
            "params": self.params.fingerprint(),
            "output_schema": self.output_schema,
        }


class LLMResponse(BaseModel):
    """The outcome of one call, successful or not; failures carry a reason."""

    call_id: str
    status: CallStatus
    # `error_kind` names the failure reason (e.g. `rate_limited`, `length`, `invalid_output`,
    # `budget_exceeded`); `error` is the redacted detail, prefixed with the kind.
    error_kind: str | None = None
    error: str | None = None
    text: str | None = None
    parsed: Any = None
    finish_reason: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    provider_request_id: str | None = None
    attempts: int = 1
    from_cache: bool = False
    # Set when the answer came from the repair call: the id of the first call, whose answer
    # failed validation. `call_id` is then the repair call's id.
    repair_of: str | None = None


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
