"""What the caption, key-info and intentions stages would cost for N posts, before paying.

The stages' real requests are rendered (current prompts, `prompts/stages.yaml`) for a sample of
posts, priced with the LLM layer's pre-flight estimate (`llm.costs.estimate_cost`, list prices
and image billing rules from `prompts/prices.yaml`) and scaled to N posts. Two figures per stage:

- the upper bound, what a budget reservation assumes: every answer of max_tokens, the caption
  and key info quoted by later prompts as long as their stage allows, every image of the size
  its model bills the most for within the stage's `max_side`;
- the expected cost: answers (and the quoted upstream answers) as long as the mean of the calls
  already recorded in `llm_calls` for that stage, and the sample's images at the size they
  would really be sent. Without recorded calls for the stage there is no expected figure.

Both assume every post has an image and no prompt-cache discount; the batch price is half the
online one (`BATCH_PRICE_FACTOR`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from miko_assets.distill.caption import build_caption_request
from miko_assets.distill.config import (
    DETAIL_PROVIDERS,
    ImageSettings,
    StageConfig,
    stage_config,
)
from miko_assets.distill.intentions import intentions_requests
from miko_assets.distill.key_info import (
    KEY_INFO_FIELDS,
    KeyInfo,
    key_info_requests,
)
from miko_assets.distill.stages import GENERATION_STAGES, RENAMED_STAGES
from miko_assets.imaging.encode import encode_for_api
from miko_assets.imaging.inspect import ImageError
from miko_assets.llm.costs import (
    BATCH_PRICE_FACTOR,
    ModelPrice,
    PriceTable,
    estimate_cost,
)
from miko_assets.llm.image_billing import worst_case_size
from miko_assets.llm.models import ImageInput, LLMRequest
from miko_assets.warehouse.schema import LLM_CALLS
from miko_assets.warehouse.warehouse import Warehouse

IMAGE_SIDES = (1024, 768, 512)
# OpenAI looks at a 512x512 version of a low-detail image, so larger ones only cost bandwidth.
LOW_DETAIL = ImageSettings(max_side=512, detail="low")


@dataclass(frozen=True)
class SamplePost:
    """A post the prompts are rendered for: its text and, if it has one, its image file and the
    folder that file must be inside (see `imaging.confine`)."""

    text: str
    image_path: Path | None = None
    image_root: Path | None = None


class AnswerLength(BaseModel):
    """The mean answer length of the `ok` calls recorded for a stage, and which model gave them."""

    calls: int
    mean_tokens: float
    model: str


class StageEstimate(BaseModel):
    """One stage at one image setting, for `posts` posts, online prices (batch: `batch()`)."""

    stage: str
    image: ImageSettings | None = None
    prompt_tokens_per_post: float
    upper_usd: float
    expected_usd: float | None = None
    answer: AnswerLength | None = None


class TeacherEstimate(BaseModel):
    """Every stage sent to one `provider/model`, caption at each image setting compared."""

    teacher: str
    posts: int
    sample_posts: int
    configured_image: ImageSettings
    caption: list[StageEstimate]
    later: list[StageEstimate]
    unpriced: bool = False

    def caption_at(self, image: ImageSettings) -> StageEstimate:
        return next(c for c in self.caption if c.image == image)

    @property
    def cheapest_image(self) -> ImageSettings:
        cheapest = min(self.caption, key=lambda c: c.upper_usd)
        assert cheapest.image is not None
        return cheapest.image

    def total(self, image: ImageSettings, expected: bool = False) -> float | None:
        """All three stages with the caption at `image`; `None` if a stage has no expected cost."""
        rows = [self.caption_at(image), *self.later]
        values = [r.expected_usd if expected else r.upper_usd for r in rows]
        return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def image_choices(provider: str, configured: ImageSettings) -> list[ImageSettings]:
    """The image settings compared for a provider: the configured one first, then smaller
    sides, and OpenAI's low detail."""
    choices = [configured] + [ImageSettings(max_side=side) for side in IMAGE_SIDES]
    if provider in DETAIL_PROVIDERS:
        choices.append(LOW_DETAIL)
    return list(dict.fromkeys(choices))


def recorded_answer_lengths(warehouse: Warehouse) -> dict[tuple[str, str], AnswerLength]:
    """(stage, model) -> mean answer tokens of the `ok` calls recorded in `llm_calls`."""
    rows = warehouse.rows(
        f"SELECT stage, model, count(*), sum(tokens_out) FROM {LLM_CALLS.name} "
        "WHERE status = ? AND stage IS NOT NULL AND tokens_out > 0 GROUP BY stage, model",
        ["ok"],
    )
    # Calls recorded before a stage was renamed count under its name of today.
    new_name = {old: new for new, old in RENAMED_STAGES.items()}
    totals: dict[tuple[str, str], tuple[int, float]] = {}
    for stage, model, n, tokens in rows:
        key = (new_name.get(stage, stage), model)
        calls, total = totals.get(key, (0, 0.0))
        totals[key] = (calls + n, total + float(tokens))
    return {
        (stage, model): AnswerLength(calls=n, mean_tokens=total / n, model=model)
        for (stage, model), (n, total) in totals.items()
    }


def answer_length_for(
    lengths: Mapping[tuple[str, str], AnswerLength], stage: str, model: str
) -> AnswerLength | None:
    """The stage's measured answer length with `model`, else with the model most calls used."""
    if (stage, model) in lengths:
        return lengths[(stage, model)]
    measured = [length for (s, _), length in lengths.items() if s == stage]
    return max(measured, key=lambda length: length.calls, default=None)


def teacher_configs(teacher: str, env: Mapping[str, str] = os.environ) -> dict[str, StageConfig]:
    """Each stage's configuration with every stage sent to `teacher` (`provider/model`)."""
    provider, _, model = teacher.partition("/")
    if not provider or not model:
        raise ValueError(f"a teacher is provider/model, e.g. openai/gpt-4o-mini, not {teacher!r}")
    env = dict(env)
    for stage in GENERATION_STAGES:
        env[f"MIKO_{stage.upper()}_PROVIDER"], env[f"MIKO_{stage.upper()}_MODEL"] = provider, model
        if provider not in DETAIL_PROVIDERS:  # a detail configured for OpenAI means nothing here
            env[f"MIKO_{stage.upper()}_IMAGE_DETAIL"] = "none"
    return {stage: stage_config(stage, env) for stage in GENERATION_STAGES}


def estimate_teacher(
    teacher: str,
    sample: Sequence[SamplePost],
    posts: int,
    prices: PriceTable,
    lengths: Mapping[tuple[str, str], AnswerLength],
    env: Mapping[str, str] = os.environ,
) -> TeacherEstimate:
    """The cost of sending every stage to `teacher` (`provider/model`) for `posts` posts,
    from the prompts of the `sample` posts."""
    return estimate_stages(teacher_configs(teacher, env), sample, posts, prices, lengths)


def estimate_stages(
    configs: Mapping[str, StageConfig],
    sample: Sequence[SamplePost],
    posts: int,
    prices: PriceTable,
    lengths: Mapping[tuple[str, str], AnswerLength],
) -> TeacherEstimate:
    """The cost of the three stages as `configs` configure them, for `posts` posts, from the
    prompts of the `sample` posts."""
    if not sample:
        raise ValueError("no sample posts to render the prompts from")
    scale = posts / len(sample)
    answers = {stage: answer_length_for(lengths, stage, configs[stage].model) for stage in GENERATION_STAGES}

    def stage_estimate(
        stage: str, build: Callable[[SamplePost, bool], Sequence[LLMRequest]], image: ImageSettings | None = None
    ) -> StageEstimate:
        """`build` gives a post's requests: one, or one per relation or field."""
        price = prices.price_for(configs[stage].provider, configs[stage].model)
        upper = estimate_cost([r for post in sample for r in build(post, False)], prices)
        answer = answers[stage]
        expected = None
        if answer is not None:
            requests = [r for post in sample for r in build(post, True)]
            prompt = estimate_cost(requests, prices).prompt_tokens
            expected = (price.cost(prompt, round(answer.mean_tokens * len(requests))) if price else 0.0) * scale
        return StageEstimate(
            stage=stage,
            image=image,
            prompt_tokens_per_post=upper.prompt_tokens / len(sample),
            upper_usd=upper.max_cost_usd * scale,
            expected_usd=expected,
            answer=answer,
        )

    texts = _UpstreamTexts(configs, answers)
    caption_config = configs["captions"]
    caption_price = prices.price_for(caption_config.provider, caption_config.model)
    caption = [
        stage_estimate("captions", _caption_builder(caption_config, image, caption_price), image)
        for image in image_choices(caption_config.provider, caption_config.image)
    ]
    later = [
        stage_estimate(
            "key_info",
            lambda post, expected: key_info_requests(
                configs["key_info"], configs["key_info"].prompt(), post.text, texts.caption(expected)
            ),
        ),
        stage_estimate(
            "intentions",
            lambda post, expected: intentions_requests(
                configs["intentions"],
                configs["intentions"].prompt(),
                post.text,
                texts.caption(expected),
                texts.key_info(expected),
            ),
        ),
    ]
    models = dict.fromkeys(f"{configs[s].provider}/{configs[s].model}" for s in GENERATION_STAGES)
    return TeacherEstimate(
        teacher=", ".join(models),
        posts=posts,
        sample_posts=len(sample),
        configured_image=caption_config.image,
        caption=caption,
        later=later,
        unpriced=any(prices.price_for(*m.split("/", 1)) is None for m in models),
    )


def _caption_builder(
    config: StageConfig, image: ImageSettings, price: ModelPrice | None
) -> Callable[[SamplePost, bool], Sequence[LLMRequest]]:
    """Caption requests at `image`: the image the model bills most for (upper bound), or the
    sample post's own image as it would be sent (expected; the worst case if it has none)."""
    config = config.model_copy(update={"image": image})
    prompt = config.prompt()
    width, height = worst_case_size(price.image, image.max_side, image.detail) if price and price.image else (
        image.max_side, image.max_side)
    worst = ImageInput(sha256="0" * 64, data_b64="", width=width, height=height)
    sent: dict[Path, ImageInput] = {}

    def build(post: SamplePost, expected: bool) -> tuple[LLMRequest]:
        shown = worst
        if expected and post.image_path is not None:
            if post.image_path not in sent:
                try:
                    sent[post.image_path] = encode_for_api(
                        post.image_path, post.image_root, max_side=image.max_side
                    )
                except ImageError:
                    sent[post.image_path] = worst
            shown = sent[post.image_path]
        return (build_caption_request(config, prompt, post.text, shown),)

    return build


class _UpstreamTexts:
    """The caption and key info later prompts quote: as long as their stage allows (upper
    bound) or as long as their measured mean answer (expected)."""

    def __init__(self, configs: Mapping[str, StageConfig], answers: Mapping[str, AnswerLength | None]) -> None:
        self._configs = configs
        self._answers = answers

    def _tokens(self, stage: str, expected: bool) -> int:
        answer = self._answers[stage]
        if expected and answer is not None:
            return round(answer.mean_tokens)
        return self._configs[stage].params.max_tokens

    def caption(self, expected: bool) -> str:
        return text_of_tokens(self._tokens("captions", expected))

    def key_info(self, expected: bool) -> KeyInfo:
        per_field = self._tokens("key_info", expected) // len(KEY_INFO_FIELDS)
        return KeyInfo(**{f: text_of_tokens(per_field) for f in KEY_INFO_FIELDS})


def text_of_tokens(tokens: int) -> str:
    """Filler text the estimator counts as `tokens` tokens (four characters each)."""
    return " ".join(["abc"] * tokens)


def batch(usd: float | None) -> float | None:
    """The batch price of an online cost."""
    return None if usd is None else usd * BATCH_PRICE_FACTOR


def report(estimates: Sequence[TeacherEstimate], source: str) -> str:
    """The cost table of each teacher, as Markdown."""
    lines: list[str] = []
    for e in estimates:
        lines += [
            f"{e.teacher}: {e.posts:,} posts, prompts rendered from {e.sample_posts} posts of {source}"
            + (" (no price in prompts/prices.yaml: counted as free)" if e.unpriced else ""),
            "",
            (
                "| stage | images | prompt tokens / post | upper bound online | upper bound batch "
                "| expected online | expected batch |"
            ),
            "|---|---|---|---|---|---|---|",
        ]
        for row in [*e.caption, *e.later]:
            image = row.image.describe() + (" (configured)" if row.image == e.configured_image else "") if row.image else ""
            lines.append(
                f"| {row.stage} | {image} | {row.prompt_tokens_per_post:,.0f} | {_usd(row.upper_usd)} "
                f"| {_usd(batch(row.upper_usd))} | {_usd(row.expected_usd)} | {_usd(batch(row.expected_usd))} |"
            )
        for label, image in (("configured", e.configured_image), ("cheapest", e.cheapest_image)):
            upper, expected = e.total(image), e.total(image, expected=True)
            assert upper is not None
            lines.append(
                f"| **all three** | {label}: {image.describe()} | | **{_usd(upper)}** "
                f"| **{_usd(batch(upper))}** | {_usd(expected)} | {_usd(batch(expected))} |"
            )
        cheapest_batch, configured_online = batch(e.total(e.cheapest_image)), e.total(e.configured_image)
        assert cheapest_batch is not None and configured_online is not None
        lines += [
            "",
            (
                f"Upper bound per 1,000 posts: {_usd(cheapest_batch / e.posts * 1000)} in batch with the "
                f"cheapest images, {_usd(configured_online / e.posts * 1000)} online with the configured ones."
            ),
        ]
        measured = {r.stage: r.answer for r in (*e.caption[:1], *e.later) if r.answer is not None}
        if measured:
            lines.append("Expected answer lengths, from calls recorded in llm_calls: " + "; ".join(
                f"{stage} {a.mean_tokens:,.0f} tokens ({a.calls} calls of {a.model})" for stage, a in measured.items()
            ) + ".")
        missing = [s for s in GENERATION_STAGES if s not in measured]
        if missing:
            lines.append(f"No expected cost for {', '.join(missing)}: no calls of that stage are recorded yet.")
        lines.append("")
    return "\n".join(lines)


def _usd(value: float | None) -> str:
    return "n/a" if value is None else f"${value:,.2f}"
