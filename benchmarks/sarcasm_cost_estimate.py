"""What the teacher costs to distil the full MMSD2.0 (19,816 train + 2,410 valid + 2,409 test posts).

Renders the real caption, key-info and intentions requests of the current prompts
(`prompts/stages.yaml`, or `$MIKO_PROMPTS_DIR`) for the shared MMSD2.0 sample, prices them
with the LLM layer's pre-flight estimate (`miko_assets.llm.costs.estimate_cost`, list prices
from `prompts/prices.yaml`) and scales the sample to the full dataset. The estimate is an
upper bound, like the budget guard's reservation: every answer is assumed to use its
max_tokens, every image (the largest the imaging layer sends) to cost the model's `image_tokens`
from the price table, and the caption and key info that later prompts quote to be as long as
their stage allows. No prompt-cache discount.

    python benchmarks/sarcasm_cost_estimate.py [--teacher openai/gpt-4o-mini ...] [--sample FILE ...]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from miko_assets.datasets.mmsd2 import load_mmsd2
from miko_assets.distill.caption import build_caption_request
from miko_assets.distill.config import StageConfig, stage_config
from miko_assets.distill.intentions import build_intentions_request
from miko_assets.distill.key_info import (
    KEY_INFO_FIELDS,
    KeyInfo,
    build_key_info_request,
)
from miko_assets.llm.costs import CostEstimate, PriceTable, estimate_cost
from miko_assets.llm.models import ImageInput, LLMRequest

FULL_MMSD2_POSTS = 19_816 + 2_410 + 2_409
DEFAULT_SAMPLES = [
    Path(__file__).resolve().parents[2] / "shared" / "data" / "mmsd2" / name
    for name in ("train_sample.json", "valid_sample.json")
]
DEFAULT_TEACHERS = ["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"]
STAGES = ("caption", "key_info", "intentions")
# Every MMSD2.0 post has an image; the estimate prices it at the model's `image_tokens`, whatever its bytes.
IMAGE = ImageInput(sha256="0" * 64, data_b64="")


def text_of_tokens(tokens: int) -> str:
    """Filler text the estimator counts as `tokens` tokens (four characters each)."""
    return " ".join(["abc"] * tokens)


def stage_requests(configs: dict[str, StageConfig]) -> dict[str, Callable[[str], LLMRequest]]:
    """stage -> the request of one post text, its upstream answers as long as they may be."""
    prompts = {stage: config.prompt() for stage, config in configs.items()}
    caption = text_of_tokens(configs["caption"].params.max_tokens)
    field_tokens = configs["key_info"].params.max_tokens // len(KEY_INFO_FIELDS)
    key_info = KeyInfo(**{f: text_of_tokens(field_tokens) for f in KEY_INFO_FIELDS})
    return {
        "caption": lambda text: build_caption_request(configs["caption"], prompts["caption"], text, IMAGE),
        "key_info": lambda text: build_key_info_request(configs["key_info"], prompts["key_info"], text, caption),
        "intentions": lambda text: build_intentions_request(
            configs["intentions"], prompts["intentions"], text, caption, key_info
        ),
    }


def estimate_teacher(teacher: str, texts: Sequence[str], prices: PriceTable) -> dict[str, CostEstimate]:
    """Per stage, the estimate for `texts` with every stage sent to `teacher` (`provider/model`)."""
    provider, model = teacher.split("/", 1)
    env = dict(os.environ)
    for stage in STAGES:
        env[f"MIKO_{stage.upper()}_PROVIDER"], env[f"MIKO_{stage.upper()}_MODEL"] = provider, model
    requests = stage_requests({stage: stage_config(stage, env) for stage in STAGES})
    return {stage: estimate_cost([requests[stage](t) for t in texts], prices) for stage in STAGES}


def report(teachers: Sequence[str], samples: Sequence[Path]) -> str:
    texts = [post.text for path in samples for post in load_mmsd2(path)]
    scale = FULL_MMSD2_POSTS / len(texts)
    prices = PriceTable.load()
    prompts = {s: f"{c.prompt_name}@{c.prompt_version}" for s, c in ((s, stage_config(s)) for s in STAGES)}
    lines = [
        (
            f"Pre-flight upper bound for {FULL_MMSD2_POSTS:,} MMSD2.0 posts, scaled from {len(texts)} sample "
            "posts (images at each model's `image_tokens`, answers at max_tokens, list prices, no cache discount)."
        ),
        "",
        "| teacher | stage | prompt | prompt tokens / post | max output tokens / post | max USD / 1k posts | max USD, full MMSD2.0 |",
        "|---|---|---|---|---|---|---|",
    ]
    for teacher in teachers:
        estimates = estimate_teacher(teacher, texts, prices)
        if unpriced := sorted({m for e in estimates.values() for m in e.unpriced_models}):
            raise SystemExit(f"no price in prompts/prices.yaml (or $MIKO_PRICES_PATH) for {', '.join(unpriced)}")
        for stage, estimate in estimates.items():
            lines.append(
                f"| {teacher} | {stage} | {prompts[stage]} "
                f"| {estimate.prompt_tokens / len(texts):,.0f} | {estimate.max_output_tokens / len(texts):,.0f} "
                f"| {estimate.max_cost_usd / len(texts) * 1000:,.2f} | {estimate.max_cost_usd * scale:,.2f} |"
            )
        total = sum(e.max_cost_usd for e in estimates.values())
        per_post = total / len(texts)
        lines.append(f"| {teacher} | **all three** | | | | {per_post * 1000:,.2f} | **{per_post * FULL_MMSD2_POSTS:,.2f}** |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", action="append", help=f"provider/model (default: {', '.join(DEFAULT_TEACHERS)})")
    parser.add_argument("--sample", action="append", type=Path, help="MMSD2.0 JSON file(s) to render prompts from")
    args = parser.parse_args()
    print(report(args.teacher or DEFAULT_TEACHERS, args.sample or DEFAULT_SAMPLES))


if __name__ == "__main__":
    main()
