"""How providers bill an image in prompt tokens, per model (the `image` entry in `prices.yaml`).

Three published rules (sources cited in `prompts/prices.yaml`):

- `tiles` (OpenAI gpt-4o family, gpt-4.1, gpt-5): the image is scaled down to fit 2048x2048,
  then down so its shortest side is at most 768 px, and covered by 512 px tiles; it costs
  `base + tile * tiles`. `detail: low` costs `base` alone, whatever the size.
- `patches` (OpenAI gpt-4.1-mini/nano, gpt-5-mini/nano, o4-mini): 32 px patches, at most
  1,536, times a model multiplier, rounded up; `detail` changes nothing. The guide scales a
  larger image down to a little under the cap (1800x2400: 1,452 patches), but the API was
  measured billing the full 1,536 for such images, so the cap is what is counted here.
- `area` (Anthropic): width x height / 750 after the image is scaled down so its long edge is
  at most 1,568 px and it costs at most about 1,600 tokens.

`detail: auto` lets OpenAI choose, so it is priced as `high`, the dearer of the two.
"""

from __future__ import annotations

import functools
import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from miko_assets.llm.models import ImageDetail


class TileBilling(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: Literal["tiles"]
    base: int = Field(ge=0)
    tile: int = Field(ge=0)
    fit: int = 2048
    short_side: int = 768
    tile_px: int = 512

    def tokens(self, width: int, height: int, detail: ImageDetail | None) -> int:
        if detail == "low":
            return self.base
        width, height = _fit_within(width, height, self.fit)
        # Only ever scaled down: a 128x64 image bills one tile, not six.
        shortest = min(width, height)
        if shortest > self.short_side:
            width, height = _scaled(width, height, self.short_side / shortest)
        tiles = math.ceil(width / self.tile_px) * math.ceil(height / self.tile_px)
        return self.base + self.tile * tiles


class PatchBilling(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: Literal["patches"]
    multiplier: float = Field(gt=0)
    patch_px: int = 32
    max_patches: int = 1536

    def tokens(self, width: int, height: int, detail: ImageDetail | None) -> int:
        patches = math.ceil(width / self.patch_px) * math.ceil(height / self.patch_px)
        return math.ceil(min(patches, self.max_patches) * self.multiplier)


class AreaBilling(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: Literal["area"]
    pixels_per_token: int = 750
    max_edge: int = 1568
    max_tokens: int = 1600

    def tokens(self, width: int, height: int, detail: ImageDetail | None) -> int:
        width, height = _fit_within(width, height, self.max_edge)
        if width * height / self.pixels_per_token > self.max_tokens:
            width, height = _scaled(
                width, height, math.sqrt(self.max_tokens * self.pixels_per_token / (width * height))
            )
        return math.ceil(width * height / self.pixels_per_token)


ImageBilling = Annotated[TileBilling | PatchBilling | AreaBilling, Field(discriminator="rule")]


def image_tokens(billing: ImageBilling, width: int, height: int, detail: ImageDetail | None) -> int:
    """Prompt tokens the provider bills for one `width` x `height` image sent at `detail`."""
    if width <= 0 or height <= 0:
        raise ValueError(f"an image has positive sides, not {width}x{height}")
    return billing.tokens(width, height, detail)


@functools.lru_cache(maxsize=256)
def worst_case_size(billing: ImageBilling, max_side: int, detail: ImageDetail | None) -> tuple[int, int]:
    """The size, long side at most `max_side`, whose image the rule bills the most.

    Not always the square: with tiles, a 2048x800 image costs more than a 2048x2048 one.
    """
    return max(
        ((max_side, short) for short in range(1, max_side + 1)),
        key=lambda size: (billing.tokens(*size, detail), size[1]),
    )


def _fit_within(width: int, height: int, side: int) -> tuple[int, int]:
    longest = max(width, height)
    return (width, height) if longest <= side else _scaled(width, height, side / longest)


def _scaled(width: int, height: int, factor: float) -> tuple[int, int]:
    return max(1, round(width * factor)), max(1, round(height * factor))
