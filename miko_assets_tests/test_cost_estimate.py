"""`miko estimate`: the stages' cost for N posts per model, upper bound and expected (from the
answer lengths recorded in a real DuckDB warehouse), online and batch, per image setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from miko_assets import cli
from miko_assets.datasets.registry import load_posts
from miko_assets.distill.config import ImageSettings
from miko_assets.clock import utc_now
from miko_assets.llm.cache import CallRecord, LLMCallCache
from miko_assets.llm.costs import BATCH_PRICE_FACTOR, PriceTable
from miko_assets.stages.estimate import (
    LOW_DETAIL,
    AnswerLength,
    SamplePost,
    estimate_teacher,
    recorded_answer_lengths,
)
from miko_assets.warehouse.warehouse import Warehouse

SAMPLE = Path(__file__).resolve().parents[1] / "miko_assets" / "sample_data"
MINI = "openai/gpt-4o-mini"


def sample_posts() -> list[SamplePost]:
    posts = load_posts("jsonl", SAMPLE / "posts.jsonl", images_dir=SAMPLE / "images")
    return [SamplePost(p.text, Path(p.image_path) if p.image_path else None) for p in posts]


def record_answers(warehouse: Warehouse, stage: str, model: str, lengths: list[int], status: str = "ok") -> None:
    LLMCallCache(warehouse).put_many([
        CallRecord(call_id=f"{stage}-{model}-{status}-{i}", provider="openai", model=model, request_json="{}",
                   status=status, tokens_out=n, stage=stage, created_at=utc_now())
        for i, n in enumerate(lengths)
    ])


def test_batch_and_low_detail_cut_gpt_4o_mini_to_under_a_fifth() -> None:
    estimate = estimate_teacher(MINI, sample_posts(), 1000, PriceTable.load(), {})
    configured = estimate.caption_at(ImageSettings())
    # The caption prompt holds the 1024 px image gpt-4o-mini bills 25,501 tokens.
    assert 25_501 < configured.prompt_tokens_per_post < 25_501 + 300
    assert [c.image for c in estimate.caption] == [
        ImageSettings(max_side=1024), ImageSettings(max_side=768), ImageSettings(max_side=512), LOW_DETAIL
    ]
    assert estimate.cheapest_image == LOW_DETAIL
    assert estimate.caption_at(LOW_DETAIL).prompt_tokens_per_post < 2_833 + 300
    online = estimate.total(ImageSettings())
    cheapest_batch = estimate.total(LOW_DETAIL)
    assert online is not None and cheapest_batch is not None
    assert BATCH_PRICE_FACTOR * cheapest_batch <= online / 5
    # Without recorded calls there is no expected cost.
    assert estimate.total(LOW_DETAIL, expected=True) is None


def test_claude_compares_image_sizes_only() -> None:
    # A detail configured for OpenAI does not stop pricing Claude.
    env = {"MIKO_CAPTIONS_IMAGE_DETAIL": "low"}
    estimate = estimate_teacher("anthropic/claude-haiku-4-5", sample_posts(), 1000, PriceTable.load(), {}, env)
    assert [c.image for c in estimate.caption] == [ImageSettings(max_side=s) for s in (1024, 768, 512)]
    by_side = [c.prompt_tokens_per_post for c in estimate.caption]
    assert by_side == sorted(by_side, reverse=True)
    assert estimate.cheapest_image == ImageSettings(max_side=512)


def test_expected_cost_uses_the_recorded_answer_lengths(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path / "w.duckdb")
    record_answers(warehouse, "captions", "gpt-4o-mini", [100, 140])
    record_answers(warehouse, "captions", "gpt-4o-mini", [299], status="failed")
    record_answers(warehouse, "caption", "gpt-4o-mini", [180])  # recorded under the stage's old name
    record_answers(warehouse, "key_info", "SmolLM2-135M-Instruct.Q4_1", [40, 60, 80])
    record_answers(warehouse, "intentions", "gpt-4o-mini", [30])  # one relation's clause
    lengths = recorded_answer_lengths(warehouse)
    assert lengths[("captions", "gpt-4o-mini")] == AnswerLength(calls=3, mean_tokens=140, model="gpt-4o-mini")

    sample = sample_posts()
    prices = PriceTable.load()
    estimate = estimate_teacher(MINI, sample, 1000, prices, lengths)
    caption, key_info, intentions = estimate.caption_at(LOW_DETAIL), *estimate.later
    # Key info has no gpt-4o-mini calls: the embedded model's answers measure its length.
    assert key_info.answer is not None and key_info.answer.model == "SmolLM2-135M-Instruct.Q4_1"
    for row in (caption, key_info, intentions):
        assert row.expected_usd is not None and 0 < row.expected_usd < row.upper_usd
    # The sample's images are 400 px or less: one 512 px tile each at high detail.
    price = prices.models["gpt-4o-mini"]
    high = estimate.caption_at(ImageSettings(max_side=512))
    assert high.expected_usd is not None
    assert high.expected_usd == pytest.approx(
        caption.expected_usd + 1000 * price.cost(5_667, 0), rel=0.01
    )


def test_miko_estimate_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "w.duckdb"
    record_answers(Warehouse(path), "intentions", "gpt-4o-mini", [450, 550])
    args = ["--warehouse", str(path), "estimate", "--posts", "137287", "--model", MINI,
            "--model", "anthropic/claude-haiku-4-5"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "openai/gpt-4o-mini: 137,287 posts, prompts rendered from 24 posts" in out
    assert "| captions | 512 px, detail low |" in out and "| captions | 1024 px (configured) |" in out
    assert "| **all three** | cheapest: 512 px, detail low |" in out
    assert "intentions 500 tokens (2 calls of gpt-4o-mini)" in out
    assert "No expected cost for captions, key_info" in out
    assert "detail" not in out.split("anthropic/claude-haiku-4-5: ")[1]

    assert cli.main(["--warehouse", str(path), "estimate", "--posts", "10", "--model", "gpt-4o-mini"]) == 2
    assert "provider/model" in capsys.readouterr().err
    assert not (tmp_path / "none.duckdb").exists()
    assert cli.main(["--warehouse", str(tmp_path / "none.duckdb"), "estimate", "--posts", "10"]) == 0
    assert not (tmp_path / "none.duckdb").exists()
