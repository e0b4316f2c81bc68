"""Batch submit and collect against the fake server's OpenAI Batch and Anthropic Message Batches
endpoints: nothing is written before a batch ends, its answers then serve the online path from
the cache at the batch price, and its failed items fall back to online calls."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from miko_assets import cli
from miko_assets.devtools.fake_llm_server import FakeLLMServer
from miko_assets.llm.batch import (
    BATCH_PRICE_FACTOR,
    COLLECTED,
    PENDING,
    collect_batches,
    list_batches,
    request_from_json,
    submit_batch,
)
from miko_assets.llm.costs import PriceTable
from miko_assets.llm.models import ImageInput, LLMRequest, Message
from miko_assets.llm.provider_registry import ProviderConfigError, ProviderRegistry
from miko_assets.llm.runner import LLMRunner, RunSummary
from miko_assets.resources import WarehouseResource
from miko_assets.stages.common import StageRun, runner_completer
from miko_assets.stages.versions import current_stage_specs, stage_inputs, stage_rows
from miko_assets.warehouse.schema import TABLES
from miko_assets.warehouse.warehouse import Warehouse
from miko_assets_tests.conftest import KEY_SECRET, Answer, make_runner, provider_env, request


def online_runner(env: dict[str, str], warehouse: Warehouse) -> LLMRunner:
    registry = ProviderRegistry(env)
    return LLMRunner(registry, warehouse, config=make_runner(registry.get("openai"), None).config)


def warehouse_text(warehouse: Warehouse) -> str:
    """Every value of every table, as text."""
    return "\n".join(str(warehouse.rows(f"SELECT * FROM {name}")) for name in TABLES)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_submit_collect_then_online_runs_are_served_from_the_cache(
    provider: str,
    server: tuple[FakeLLMServer, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the SDKs' and HTTP clients' included
    fake, url = server
    env = provider_env(url)
    warehouse = Warehouse(tmp_path / "w.duckdb")
    runner = online_runner(env, warehouse)
    # In the batch: three fail there (a server error, a cut-off answer, an auth error whose
    # body echoes the key) and answer online; one request is already in the cache.
    scripts = ["ok", "okc", "500,ok", "length,ok", "401,ok"]
    requests = [request(provider, f"q{i} script={s}") for i, s in enumerate(scripts)]
    cached = request(provider, "already answered")
    assert runner.run([cached], Answer).summary.calls_made == 1
    everything = [*requests, cached, requests[0]]  # a duplicate is submitted once

    submission = submit_batch(
        warehouse, everything, env, stage="test", asset="intentions", partition_key="p1"
    )
    assert submission.batch_id is not None and submission.provider == provider
    assert (submission.requests, submission.unique_requests) == (7, 6)
    assert (submission.cached, submission.in_flight, submission.submitted) == (1, 0, 5)
    assert submission.estimated_max_cost_usd > 0
    [batch] = list_batches(warehouse)
    assert (batch.status, batch.n_items, batch.partition_key) == (PENDING, 5, "p1")
    sent = fake.batches[submission.batch_id]
    assert sent.get("status", sent.get("processing_status")) == "in_progress"
    # The wire bodies are the online providers' own, keyed by the cache key.
    items = {i["custom_id"]: i["body"] for i in fake.batch_items[submission.batch_id]}
    body = items[requests[0].cache_key()]
    assert body["model"] == requests[0].model and body["temperature"] == 0.0
    assert ("tools" if provider == "anthropic" else "response_format") in body
    assert "extra_body" not in body
    # Submitting again sends nothing: everything is cached or in the pending batch.
    again = submit_batch(warehouse, everything, env)
    assert (again.batch_id, again.in_flight, again.submitted) == (None, 5, 0)

    # Not ended yet: polled, nothing written.
    summary = collect_batches(warehouse, env)
    assert (summary.checked, summary.still_pending, summary.collected) == (1, 1, [])
    assert warehouse.rows("SELECT count(*) FROM llm_calls") == [(1,)]
    assert list_batches(warehouse)[0].provider_status == "in_progress"

    online_requests = fake.requests
    fake.complete_batches()
    summary = collect_batches(warehouse, env)
    [collected] = summary.collected
    assert (collected.status, collected.n_succeeded, collected.n_failed) == (COLLECTED, 2, 3)
    assert summary.failures_by_reason == {"auth": 1, "length": 1, "server_error": 1}
    assert fake.requests - online_requests == 5  # the batch items, answered by the server

    calls = {
        r[0]: r[1:]
        for r in warehouse.rows(
            "SELECT call_id, status, error, tokens_in, tokens_out, tokens_cached, cost_usd, "
            "stage FROM llm_calls"
        )
    }
    prices = PriceTable.load()
    for i, script in enumerate(scripts):
        status, error, tokens_in, tokens_out, tokens_cached, cost, stage = calls[
            requests[i].cache_key()
        ]
        if script in ("ok", "okc"):
            price = prices.price_for(provider, requests[i].model)
            assert price is not None
            assert (status, error, stage) == ("ok", None, "test")
            assert tokens_in > 0 and tokens_out == 12
            assert (tokens_cached > 0) == (script == "okc")
            online = price.cost(tokens_in, tokens_out, tokens_cached)
            assert cost == pytest.approx(BATCH_PRICE_FACTOR * online) and cost > 0
        else:
            assert status == "failed" and error.split(":")[0] in {"server_error", "length", "auth"}
    items = dict(warehouse.rows("SELECT call_id, status FROM llm_batch_items"))
    assert sorted(items.values()) == ["failed", "failed", "failed", "ok", "ok"]

    # The online path: only the three items that failed in the batch are called, and succeed.
    result = runner.run(everything, Answer)
    assert result.summary.calls_made == 3 and result.summary.cache_hits == 3
    assert all(r.status == "ok" for r in result.responses)
    assert runner.run(everything, Answer).summary.calls_made == 0
    assert collect_batches(warehouse, env).checked == 0

    assert KEY_SECRET not in warehouse_text(warehouse)
    assert KEY_SECRET not in caplog.text
    assert "***" in calls[requests[4].cache_key()][1]  # the echoed key, masked


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_an_expired_batch_leaves_every_item_to_the_online_path(
    provider: str, server: tuple[FakeLLMServer, str], tmp_path: Path
) -> None:
    fake, url = server
    env = provider_env(url)
    warehouse = Warehouse(tmp_path / "w.duckdb")
    requests = [request(provider, f"late {i}") for i in range(3)]
    assert submit_batch(warehouse, requests, env).submitted == 3

    fake.complete_batches(expire=True)
    summary = collect_batches(warehouse, env)

    [collected] = summary.collected
    assert collected.provider_status in ("expired", "ended")
    assert (collected.n_succeeded, collected.n_failed, collected.cost_usd) == (0, 3, 0.0)
    assert summary.failures_by_reason == {"batch_expired": 3}
    assert warehouse.rows("SELECT DISTINCT status FROM llm_calls") == [("failed",)]
    result = online_runner(env, warehouse).run(requests, Answer)
    assert result.summary.calls_made == 3 and result.summary.succeeded == 3


def test_a_batch_that_cannot_be_polled_stays_pending_with_the_reason(
    server: tuple[FakeLLMServer, str], tmp_path: Path
) -> None:
    _, url = server
    env = provider_env(url)
    warehouse = Warehouse(tmp_path / "w.duckdb")
    submit_batch(warehouse, [request("anthropic", "q")], env)

    summary = collect_batches(warehouse, {**env, "ANTHROPIC_API_KEY": ""})

    assert summary.still_pending == 1 and summary.collected == []
    [error] = summary.errors.values()
    assert "ANTHROPIC_API_KEY" in error
    [batch] = list_batches(warehouse)
    assert batch.status == PENDING and batch.error == error


def test_only_api_providers_have_batches(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path / "w.duckdb")
    with pytest.raises(ProviderConfigError, match="no batch API"):
        submit_batch(warehouse, [request("local", "q")], {})
    with pytest.raises(ValueError, match="one provider"):
        submit_batch(warehouse, [request("openai", "q"), request("anthropic", "q")], {})
    with pytest.raises(ValueError, match="MIKO_MAX_SPEND_USD"):
        submit_batch(warehouse, [request("openai", "q")], {"MIKO_MAX_SPEND_USD": "0.000001"})
    assert list_batches(warehouse) == []


def test_stored_requests_rebuild_to_the_same_key() -> None:
    image = ImageInput(sha256="ab" * 32, media_type="image/png", data_b64="aGVsbG8=")
    original = LLMRequest(
        provider="openai",
        model="gpt-4o-mini",
        messages=(
            Message(role="system", content="Describe."),
            Message(role="user", content="this", images=(image,)),
        ),
        output_schema=Answer.model_json_schema(),
        schema_name="Answer",
    )
    rebuilt = request_from_json(original.request_json())
    assert rebuilt.cache_key() == original.cache_key()
    assert rebuilt.messages[1].images[0].data_b64 == ""


def add_posts(warehouse: Warehouse, partition: str, texts: list[str]) -> None:
    warehouse.append(
        "posts",
        pd.DataFrame(
            {
                "batch": partition,
                "post_id": [f"t:{i}" for i in range(len(texts))],
                "text": texts,
            }
        ),
    )


@pytest.mark.parametrize(
    ("version", "script", "calls"),
    [("v2", " script=fill", 2), ("v3", "", 20)],  # one call per post (JSON), one per relation
)
def test_miko_batch_commands_then_the_partition_is_made_from_the_cache(
    server: tuple[FakeLLMServer, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    version: str,
    script: str,
    calls: int,
) -> None:
    fake, url = server
    for name, value in {
        **provider_env(url),
        "MIKO_INTENTIONS_PROVIDER": "openai",
        "MIKO_INTENTIONS_MODEL": "gpt-4o-mini",
        "MIKO_INTENTIONS_PROMPT_VERSION": version,
    }.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "w.duckdb"
    warehouse = Warehouse(path)
    add_posts(warehouse, "p1", [f"Love Mondays{script}", f"Best train ever{script}"])

    def miko(*args: str) -> str:
        assert cli.main(["--warehouse", str(path), "batch", *args]) == 0
        return capsys.readouterr().out

    assert f"{calls} requests, 0 cached, 0 already in a pending batch, {calls} submitted" in miko(
        "submit", "--stage", "intentions", "--batch", "p1"
    )
    assert f": pending (submitted), {calls} items" in miko("status")
    assert "1 still pending" in miko("collect")
    fake.complete_batches()
    assert f"1 collected ({calls} answers, 0 failed items" in miko("collect")
    assert f"intentions p1: collected (completed), {calls} items, {calls} answers, 0 failed" in miko("status")
    assert "0 submitted" in miko("submit", "--stage", "intentions", "--batch", "p1")

    # The asset's own path for the partition: every answer from the cache, no call made.
    spec = current_stage_specs()["intentions"]
    summaries: list[RunSummary] = []
    complete = runner_completer(LLMRunner.from_env(warehouse), "run", spec.asset, summaries)
    run = StageRun.start(spec.config, "run", spec.code_version)
    rows = stage_rows("intentions")(*stage_inputs(warehouse, "intentions", "p1"), run, complete)
    assert (summaries[0].calls_made, summaries[0].cache_hits) == (0, calls)
    assert len(rows) == 20 and set(rows["status"]) == {"ok"}
    assert rows["llm_call_id"].nunique() == calls
    assert set(warehouse.rows("SELECT stage FROM llm_calls")) == {("intentions",)}


def test_the_sensor_collects_and_materializes_the_partition(
    server: tuple[FakeLLMServer, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from miko_assets.definitions import llm_batch_collector

    fake, url = server
    for name, value in provider_env(url).items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "w.duckdb"
    warehouse = Warehouse(path)
    submit_batch(warehouse, [request("anthropic", "q")], asset="intentions", partition_key="p1")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("post_batches", ["p1"])

    def tick() -> object:
        context = dg.build_sensor_context(
            instance=instance, resources={"warehouse": WarehouseResource(path=str(path))}
        )
        return llm_batch_collector(context)

    pending = tick()
    assert isinstance(pending, dg.SkipReason) and "1 still pending" in str(pending.skip_message)
    fake.complete_batches()
    result = tick()
    assert isinstance(result, dg.SensorResult)
    [run] = result.run_requests or []
    assert run.partition_key == "p1" and run.asset_selection == [dg.AssetKey("intentions")]
    assert isinstance(tick(), dg.SkipReason)
