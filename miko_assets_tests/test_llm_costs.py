"""Prices, per-call cost, the pre-flight estimate, the budget guard and the env configuration."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from PIL import Image

from miko_assets.cpu_lock import core_count, default_slots
from miko_assets.devtools.fake_llm_server import FakeLLMServer
from miko_assets.imaging.encode import encode_for_api
from miko_assets.llm.config import ProviderLimits, RunnerConfig
from miko_assets.llm.costs import (
    IMAGE_TOKENS_ESTIMATE,
    BudgetGuard,
    ModelPrice,
    PriceTable,
    call_estimate,
    estimate_cost,
    prompt_tokens_estimate,
)
from miko_assets.llm.image_billing import image_tokens, worst_case_size
from miko_assets.llm.models import ImageDetail, ImageInput, Message
from miko_assets.llm.provider_registry import ProviderRegistry
from miko_assets.llm.runner import LLMRunner
from miko_assets.warehouse.warehouse import Warehouse
from miko_assets_tests.conftest import (
    Answer,
    make_provider,
    make_runner,
    request,
)

PRICEY = PriceTable(models={"pricey": ModelPrice(input=1000, output=2000, cached_input=100)})


def test_price_table_lookup_and_cost() -> None:
    table = PriceTable.load()
    assert table.price_for("openai", "gpt-4o-mini-2024-07-18") == table.models["gpt-4o-mini"]
    assert table.price_for("openai", "gpt-4o-2024-08-06") == table.models["gpt-4o"]
    assert (
        table.price_for("anthropic", "claude-sonnet-4-20250514") == table.models["claude-sonnet-4"]
    )
    assert table.price_for("local", "anything").cost(10**6, 10**6) == 0
    assert table.price_for("openai", "no-such-model") is None
    mini = table.models["gpt-4o-mini"]
    # 1M prompt tokens of which 400k cached, 100k completion tokens.
    assert mini.cost(1_000_000, 100_000, 400_000) == pytest.approx(
        0.6 * 0.15 + 0.4 * 0.075 + 0.1 * 0.60
    )
    haiku = table.models["claude-3-5-haiku"]
    assert haiku.cost(1_000_000, 0, 0, 1_000_000) == pytest.approx(1.00)  # cache writes cost more


def test_preflight_estimate_from_rendered_prompts() -> None:
    requests = [request("openai", "x" * 400, model="pricey") for _ in range(3)]
    per_request = prompt_tokens_estimate(requests[0])
    assert per_request == 100 + 5 + 2 * 4  # user text, system text, two message overheads
    estimate = estimate_cost(requests + [request("openai", "y", model="unknown-model")], PRICEY)
    assert estimate.requests == 4 and estimate.max_output_tokens == 200
    assert estimate.max_cost_usd == pytest.approx(3 * (per_request * 1000 + 50 * 2000) / 1e6)
    assert estimate.unpriced_models == ["openai/unknown-model"]


def test_images_are_estimated_at_what_each_model_bills_for_them() -> None:
    table = PriceTable.load()
    image = ImageInput(sha256="0" * 64, data_b64="")  # size unknown: the largest miko sends
    text = request("openai", "describe").model_copy(
        update={"messages": (Message(role="user", content="describe"),)}
    )
    with_image = text.model_copy(
        update={"messages": (Message(role="user", content="describe", images=(image, image)),)}
    )
    text_only = prompt_tokens_estimate(text)
    by_model = {
        model: estimate_cost([with_image.model_copy(update={"model": model})], table).prompt_tokens - text_only
        for model in ("gpt-4o-mini-2024-07-18", "gpt-4o", "gpt-4.1-mini", "claude-haiku-4-5", "no-such-model")
    }
    # Two 1024x1024 images each: gpt-4o-mini's 25,501 tokens an image (33 times gpt-4o's),
    # gpt-4.1-mini's patches, Claude's area, and the default for a model the table does not know.
    assert by_model == {"gpt-4o-mini-2024-07-18": 2 * 25_501, "gpt-4o": 2 * 765, "gpt-4.1-mini": 2 * 1_659,
                        "claude-haiku-4-5": 2 * 1_399, "no-such-model": 2 * IMAGE_TOKENS_ESTIMATE}
    mini = table.models["gpt-4o-mini"]
    assert estimate_cost([with_image], table).max_cost_usd == pytest.approx(
        mini.cost(text_only + 2 * 25_501, with_image.params.max_tokens)
    )


# Published worked examples and measurements (sources in prompts/prices.yaml):
# (model, width, height, detail) -> billed tokens.
BILLED = [
    ("gpt-4o", 1024, 1024, None, 765),  # -> 768x768, 4 tiles
    ("gpt-4o", 2048, 4096, "high", 1105),  # -> 1024x2048 -> 768x1536, 6 tiles
    ("gpt-4o", 128, 64, "high", 255),  # never scaled up: one tile
    ("gpt-4o", 4000, 3000, "low", 85),
    ("gpt-4o-mini", 1024, 1024, "auto", 25_501),  # auto is priced as high
    ("gpt-4o-mini", 128, 64, "high", 8_500),  # 2,833 + 5,667, measured against the API
    ("gpt-4o-mini", 1024, 1024, "low", 2_833),
    ("gpt-4o-mini", 1024, 512, None, 2_833 + 2 * 5_667),
    ("gpt-4.1-mini", 1024, 1024, "low", 1_659),  # 1,024 patches x 1.62; detail changes nothing
    ("gpt-4.1-mini", 4000, 1474, None, 2_489),  # over the cap: 1,536 patches x 1.62
    ("claude-haiku-4-5", 200, 200, None, 54),  # Anthropic's table: ~54, ~1,334, ~1,590
    ("claude-haiku-4-5", 1000, 1000, None, 1_334),
    ("claude-haiku-4-5", 1092, 1092, None, 1_590),
    ("claude-haiku-4-5", 3000, 2000, None, 1_600),  # scaled down to about 1,600 tokens
]


@pytest.mark.parametrize(("model", "width", "height", "detail", "billed"), BILLED)
def test_image_billing_rules_give_the_published_token_counts(
    model: str, width: int, height: int, detail: ImageDetail | None, billed: int
) -> None:
    billing = PriceTable.load().models[model].image
    assert billing is not None
    assert image_tokens(billing, width, height, detail) == billed


def test_the_estimate_prices_encoded_images_by_the_billing_rule(tmp_path: Path) -> None:
    """Real images of several sizes, encoded at a stage's max side, estimated per model: the
    estimate's image tokens are exactly what the rule bills for the size actually sent."""
    table = PriceTable.load()
    sent: list[ImageInput] = []
    for width, height in [(3000, 2000), (800, 800), (300, 1200), (64, 48)]:
        path = tmp_path / f"{width}x{height}.png"
        Image.new("RGB", (width, height), (200, 120, 40)).save(path)
        for max_side in (1024, 512):
            sent.append(encode_for_api(path, max_side=max_side))
    assert {(i.width, i.height) for i in sent} >= {(1024, 683), (512, 341), (256, 1024), (64, 48)}
    for model in ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "claude-haiku-4-5"):
        price = table.models[model]
        assert price.image is not None
        for detail in (None, "low"):
            images = tuple(i.model_copy(update={"detail": detail}) for i in sent)
            call = request("openai", "describe", model=model).model_copy(
                update={"messages": (Message(role="user", content="describe", images=images),)}
            )
            billed = sum(image_tokens(price.image, i.width or 0, i.height or 0, detail) for i in images)
            estimate = estimate_cost([call], table)
            assert estimate.prompt_tokens == prompt_tokens_estimate(call.model_copy(
                update={"messages": (Message(role="user", content="describe"),)})) + billed
            assert estimate.max_cost_usd == pytest.approx(call_estimate(call, price)[1])


def test_the_worst_case_image_is_not_always_square() -> None:
    gpt_4o = PriceTable.load().models["gpt-4o"].image
    assert gpt_4o is not None
    width, height = worst_case_size(gpt_4o, 2048, None)
    assert width == 2048 and height < 2048
    assert image_tokens(gpt_4o, width, height, None) == 85 + 8 * 170 > image_tokens(gpt_4o, 2048, 2048, None)
    assert worst_case_size(gpt_4o, 1024, None) == (1024, 1024)


def test_a_misspelt_price_field_is_refused(tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  m: {input: 1, output: 2, imagetokens: 10}\n")
    with pytest.raises(ValueError, match="imagetokens"):
        PriceTable.load(prices)


def test_budget_guard_waits_for_calls_in_flight_then_refuses() -> None:
    async def scenario() -> tuple[bool, bool, bool, float]:
        guard = BudgetGuard(1.0)
        assert await guard.reserve(0.6)
        second = asyncio.create_task(
            guard.reserve(0.5)
        )  # does not fit while the first is in flight
        await asyncio.sleep(0.01)
        waited = not second.done()
        await guard.settle(0.6, 0.2)  # the first cost less than its worst case
        admitted = await second
        await guard.settle(0.5, 0.3)
        refused = not await guard.reserve(0.9)  # 0.5 spent + 0.9 > 1 with nothing in flight
        return waited, admitted, refused, guard.spent_usd

    waited, admitted, refused, spent = asyncio.run(scenario())
    assert waited and admitted and refused and spent == pytest.approx(0.5)
    assert asyncio.run(BudgetGuard(None).reserve(10**9))


def test_a_spent_budget_refuses_at_once_whatever_order_its_calls_settled_in() -> None:
    # Settled in another order than reserved, these sums leave 8e-17 "in flight" as floats; the
    # guard used to wait for that to settle, for ever (a capped backfill hung on it).
    async def scenario() -> bool:
        guard = BudgetGuard(1.0)
        amounts = [0.1, 0.2, 0.3, 0.07, 0.13]
        for amount in amounts:
            assert await guard.reserve(amount)
        for amount in reversed(amounts):
            await guard.settle(amount, 0.0)
        return await asyncio.wait_for(guard.reserve(2.0), timeout=5)

    assert asyncio.run(scenario()) is False


@pytest.mark.parametrize("concurrency", [1, 4])
def test_budget_stops_before_it_is_exceeded(
    concurrency: int, server: tuple[FakeLLMServer, str], tmp_path: Path
) -> None:
    fake, url = server
    warehouse = Warehouse(tmp_path / "w.duckdb")
    requests = [request("openai", f"budget {i} " + "x" * 80, model="pricey") for i in range(20)]
    runner = LLMRunner(
        ProviderRegistry(env={}, providers=[make_provider("openai", url)]),
        warehouse,
        config=make_runner(
            make_provider("openai", url), None, concurrency=concurrency, max_spend_usd=0.5
        ).config,
        prices=PRICEY,
    )

    result = runner.run(requests, Answer, dagster_run_id="budget-run")

    made = [r for r in result.responses if r.status == "ok"]
    refused = [r for r in result.responses if r.status == "failed"]
    assert made and refused and len(made) + len(refused) == 20
    assert fake.requests == len(made)  # refused requests were never sent
    assert result.summary.cost_usd <= 0.5
    assert result.summary.failures_by_reason == {"budget_exceeded": len(refused)}
    assert all(r.error_kind == "budget_exceeded" and r.attempts == 0 for r in refused)
    for response in made:
        assert response.cost_usd == pytest.approx(
            PRICEY.models["pricey"].cost(response.tokens_in, response.tokens_out)
        )
    # The next call would have broken the budget.
    worst_case = PRICEY.models["pricey"].cost(prompt_tokens_estimate(requests[0]), 50)
    assert result.summary.cost_usd + worst_case > 0.5
    stored = warehouse.rows(
        "SELECT count(*) FROM llm_calls WHERE status = 'failed' AND error LIKE 'budget_exceeded:%'"
    )
    assert stored == [(len(refused),)]

    # The budget is per Dagster run: a later step of the same run starts from what it spent.
    more = [request("openai", f"later {i} " + "x" * 80, model="pricey") for i in range(3)]
    later = runner.run(more, Answer, dagster_run_id="budget-run")
    assert later.summary.failures_by_reason == {"budget_exceeded": 3}
    assert runner.run(more, Answer, dagster_run_id="another-run").summary.succeeded == 3


def test_unpriced_models_are_flagged(
    server: tuple[FakeLLMServer, str], caplog: pytest.LogCaptureFixture
) -> None:
    _, url = server
    runner = make_runner(make_provider("openai", url), None)
    result = runner.run(
        [request("openai", "a", model="mystery-7b"), request("openai", "b", model="mystery-7b")],
        Answer,
    )
    assert result.summary.unpriced_models == ["openai/mystery-7b"] and result.summary.cost_usd == 0
    assert sum("no price for openai/mystery-7b" in m for m in caplog.messages) == 1


def test_runner_config_from_env() -> None:
    config = RunnerConfig.from_env(
        {
            "MIKO_LLM_CONCURRENCY": "32",
            "MIKO_OPENAI_RPM": "500",
            "MIKO_OPENAI_TPM": "200000",
            "MIKO_ANTHROPIC_CONCURRENCY": "4",
            "MIKO_MAX_SPEND_USD": "2.5",
            "MIKO_LLM_TIMEOUT_S": "30",
            "MIKO_BUDGET_NAME": "weekly",
        }
    )
    assert config.concurrency == 32 and config.max_spend_usd == 2.5 and config.timeout_s == 30
    assert config.budget_name == "weekly" and RunnerConfig.from_env({}).budget_name is None
    assert config.limits_for("openai") == ProviderLimits(rpm=500, tpm=200000)
    assert config.concurrency_for("anthropic") == 4 and config.concurrency_for("openai") == 32
    # The embedded model answers as many calls at once as it has contexts: one per core.
    assert config.concurrency_for("local") == default_slots() == min(core_count(), 4)
    assert RunnerConfig.from_env({"MIKO_LOCAL_CONCURRENCY": "3"}).concurrency_for("local") == 3
    assert RunnerConfig.from_env({}).max_spend_usd is None
