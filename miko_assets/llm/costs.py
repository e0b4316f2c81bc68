"""Prices per model, the cost of a call, pre-flight estimates and the budget guard of a batch.

Prices live in `prices.yaml` beside the prompts (`config_files.prices_path`). A model not in
the table costs 0 and is reported as unpriced: the run summary lists it and a warning is
logged once per model, since no budget can guard it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from miko_assets.config_files import prices_path
from miko_assets.llm.image_billing import ImageBilling, image_tokens, worst_case_size
from miko_assets.llm.models import DEFAULT_IMAGE_SIDE, ImageInput, LLMRequest

log = logging.getLogger(__name__)

# Prompt tokens of one image for a model whose price gives no `image` billing rule (gpt-4o bills
# a 1024 px high-detail image at 765).
IMAGE_TOKENS_ESTIMATE = 800
# What a batch answer costs against the online price (OpenAI Batch and Anthropic Message
# Batches both bill half).
BATCH_PRICE_FACTOR = 0.5
_MESSAGE_OVERHEAD_TOKENS = 4
_PER_MILLION = 1_000_000


class ModelPrice(BaseModel):
    """USD per million tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")  # a misspelt price must not pass

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    cache_write: float | None = Field(default=None, ge=0)
    # How the provider bills an image in prompt tokens (`image_billing`).
    image: ImageBilling | None = None

    def image_tokens(self, image: ImageInput) -> int:
        """Prompt tokens billed for `image` at its size and detail, by the model's rule."""
        if self.image is None:
            return IMAGE_TOKENS_ESTIMATE
        if image.width is None or image.height is None:
            # An image of unknown size is priced as the largest the imaging layer sends by default.
            width, height = worst_case_size(self.image, DEFAULT_IMAGE_SIDE, image.detail)
        else:
            width, height = image.width, image.height
        return image_tokens(self.image, width, height, image.detail)

    def cost(
        self, tokens_in: int, tokens_out: int, tokens_cached: int = 0, tokens_cache_write: int = 0
    ) -> float:
        """Cost of one call; `tokens_in` counts every prompt token, cached and cache-written too."""
        fresh = max(0, tokens_in - tokens_cached - tokens_cache_write)
        cached_price = self.input if self.cached_input is None else self.cached_input
        write_price = self.input if self.cache_write is None else self.cache_write
        return (
            fresh * self.input
            + tokens_cached * cached_price
            + tokens_cache_write * write_price
            + tokens_out * self.output
        ) / _PER_MILLION


FREE = ModelPrice(input=0, output=0)


class PriceTable(BaseModel):
    """Model prices, looked up by exact name, else by the longest listed name the model extends."""

    model_config = ConfigDict(frozen=True, extra="forbid")  # a misspelt price must not pass

    free_providers: frozenset[str] = frozenset({"local"})
    models: dict[str, ModelPrice] = Field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None = None, env: Mapping[str, str] = os.environ) -> PriceTable:
        return cls.model_validate(yaml.safe_load((path or prices_path(env)).read_text()))

    def price_for(self, provider: str, model: str) -> ModelPrice | None:
        """The model's price, `FREE` for a free provider, `None` when the model is unknown."""
        if provider in self.free_providers:
            return FREE
        if model in self.models:
            return self.models[model]
        # Dated snapshots (`gpt-4o-mini-2024-07-18`) take the price of their family.
        family = max((m for m in self.models if model.startswith(m + "-")), key=len, default=None)
        return self.models[family] if family else None


def estimate_tokens(text: str) -> int:
    """Token count estimate for English text (about four characters per token)."""
    return math.ceil(len(text) / 4)


def prompt_tokens_estimate(request: LLMRequest, price: ModelPrice | None = None) -> int:
    """Estimated prompt tokens of a rendered request, per-message overhead included, and its
    images as `price`'s model bills them (`IMAGE_TOKENS_ESTIMATE` each without a price)."""
    return sum(
        estimate_tokens(m.content)
        + _MESSAGE_OVERHEAD_TOKENS
        + sum(price.image_tokens(i) if price else IMAGE_TOKENS_ESTIMATE for i in m.images)
        for m in request.messages
    )


def call_estimate(request: LLMRequest, price: ModelPrice) -> tuple[int, float]:
    """(estimated prompt tokens, the most the call may cost): what a call reserves against a
    budget before it is sent, its prompt (images by the model's billing rule) and an answer of
    max_tokens."""
    prompt = prompt_tokens_estimate(request, price)
    return prompt, price.cost(prompt, request.params.max_tokens)


class CostEstimate(BaseModel):
    """Pre-flight estimate of calls to make; `max_cost_usd` assumes answers of max_tokens."""

    requests: int = 0
    prompt_tokens: int = 0
    max_output_tokens: int = 0
    max_cost_usd: float = 0.0
    unpriced_models: list[str] = Field(default_factory=list)


def estimate_cost(requests: Iterable[LLMRequest], prices: PriceTable) -> CostEstimate:
    """Estimate the worst-case cost of `requests` from their rendered prompts."""
    estimate = CostEstimate()
    unpriced: set[str] = set()
    for request in requests:
        price = prices.price_for(request.provider, request.model)
        prompt = prompt_tokens_estimate(request, price)
        estimate.requests += 1
        estimate.prompt_tokens += prompt
        estimate.max_output_tokens += request.params.max_tokens
        if price is None:
            unpriced.add(f"{request.provider}/{request.model}")
        else:
            estimate.max_cost_usd += price.cost(prompt, request.params.max_tokens)
    estimate.unpriced_models = sorted(unpriced)
    return estimate


SharedBudget = Callable[[float, float], Awaitable[float]]
"""Resizes a batch's share of a budget kept elsewhere: (wanted, floor) -> the new allowance."""


class BudgetGuard:
    """Keeps a batch's spend within its allowance: `max_spend_usd`, or (`BudgetGuard.shared`)
    a share of a budget kept elsewhere, see `llm.budget`.

    Each call reserves its worst case (estimated prompt, full max_tokens) before it is sent and
    settles to its real cost when it ends, so calls in flight can never jointly overshoot. A
    reservation that does not fit asks the share, if there is one, to resize the allowance to
    what is spent and in flight plus the larger of this call and `headroom_usd` (about one
    round of calls in flight, so the share is asked about once a round; it also gives back
    what settled calls did not cost). Once the share cannot fit a call it is not asked again.
    Then the reservation waits for calls in flight to settle (they usually cost less than
    reserved); it is refused once nothing is in flight and it still does not fit, and the
    caller records that call as failed.
    """

    def __init__(self, max_spend_usd: float | None) -> None:
        self.allowance_usd = max_spend_usd
        self.spent_usd = 0.0
        self._reserved = 0.0
        # Counted, not read off `_reserved`: float sums of reservations settled in another
        # order leave crumbs like 8e-17, and a wait for those to settle never ended.
        self._in_flight = 0
        self._changed = asyncio.Condition()
        self._share: SharedBudget | None = None
        self._headroom_usd = 0.0

    @classmethod
    def shared(cls, share: SharedBudget, headroom_usd: float) -> BudgetGuard:
        """A guard whose allowance starts at zero and is resized by `share`."""
        guard = cls(0.0)
        guard._share, guard._headroom_usd = share, headroom_usd
        return guard

    async def reserve(self, amount: float) -> bool:
        if self.allowance_usd is None:
            return True
        async with self._changed:
            while self.spent_usd + self._reserved + amount > self.allowance_usd:
                if self._share is not None:
                    held = self.spent_usd + self._reserved
                    self.allowance_usd = await self._share(held + max(amount, self._headroom_usd), held)
                    if held + amount > self.allowance_usd:
                        self._share = None
                    continue
                if self._in_flight == 0:
                    return False
                await self._changed.wait()
            self._reserved += amount
            self._in_flight += 1
            return True

    async def settle(self, reserved: float, actual: float) -> None:
        self.spent_usd += actual
        if self.allowance_usd is None:
            return
        async with self._changed:
            self._in_flight -= 1
            self._reserved = self._reserved - reserved if self._in_flight else 0.0
            self._changed.notify_all()


class PriceBook:
    """Prices resolved once per (provider, model) for a run; warns once per unpriced model."""

    def __init__(self, table: PriceTable) -> None:
        self._table = table
        self._resolved: dict[tuple[str, str], ModelPrice | None] = {}
        self.unpriced: set[str] = set()

    def price(self, provider: str, model: str) -> ModelPrice:
        key = (provider, model)
        if key not in self._resolved:
            price = self._table.price_for(provider, model)
            if price is None:
                log.warning("no price for %s/%s: its calls are counted as free", provider, model)
                self.unpriced.add(f"{provider}/{model}")
            self._resolved[key] = price
        return self._resolved[key] or FREE
