"""A backfill routed through the batch APIs (`miko batch backfill`): the cost online and in batch
said first; then per stage each partition's uncached requests submitted, collected when the
provider ends them, and the partitions materialized by real Dagster runs served from the cache,
with the stage's image settings carried into the batch bodies."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import pytest

from miko_assets import cli
from miko_assets.assets.posts import posts
from miko_assets.devtools.fake_llm_server import FakeLLMServer
from miko_assets.distill.stages import GENERATION_STAGES
from miko_assets.ingest.batches import ingest_file
from miko_assets.llm.costs import BATCH_PRICE_FACTOR
from miko_assets.partitions import register_batches
from miko_assets.resources import WarehouseResource
from miko_assets.stages.batch_backfill import run_batch_backfill
from miko_assets.warehouse.warehouse import Warehouse
from miko_assets_tests.conftest import provider_env

SAMPLE = Path(__file__).resolve().parents[1] / "miko_assets" / "sample_data"
PARTITIONS = ["sample-few-0000", "sample-few-0001"]


def ingest_sample(warehouse: Warehouse, folder: Path, n: int) -> None:
    """The first `n` sample posts, scripted so the fake answers every schema, one a partition."""
    rows = [json.loads(line) for line in (SAMPLE / "posts.jsonl").read_text().splitlines()[:n]]
    path = folder / "few.jsonl"
    path.write_text("".join(json.dumps({**r, "text": r["text"] + " script=fill"}) + "\n" for r in rows))
    ingest_file(warehouse, "jsonl", path, split="few", images_dir=SAMPLE / "images", batch_size=1)


def sent_images(items: list[dict]) -> list[dict]:
    """The `image_url` parts of batch items' chat bodies."""
    return [
        part["image_url"]
        for item in items
        for message in item["body"]["messages"]
        if isinstance(message["content"], list)
        for part in message["content"]
        if part.get("type") == "image_url"
    ]


def use_provider(monkeypatch: pytest.MonkeyPatch, url: str, **extra: str) -> None:
    env = {**provider_env(url), **extra}
    for stage in GENERATION_STAGES:
        env[f"MIKO_{stage.upper()}_PROVIDER"], env[f"MIKO_{stage.upper()}_MODEL"] = "openai", "gpt-4o-mini"
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_dry_run_says_what_the_backfill_costs_online_and_in_batch(
    server: tuple[FakeLLMServer, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    use_provider(monkeypatch, server[1])
    path = tmp_path / "w.duckdb"
    warehouse = Warehouse(path)
    ingest_sample(warehouse, tmp_path, 2)
    with dg.instance_for_test() as instance:
        register_batches(instance, warehouse)
        resources = {"warehouse": WarehouseResource(path=str(path))}
        for partition in PARTITIONS:
            assert dg.materialize([posts], partition_key=partition, instance=instance, resources=resources).success
    assert cli.main(["--warehouse", str(path), "batch", "backfill", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 posts, captions, intentions, key_info with openai/gpt-4o-mini: at most $")
    online, batch = (float(x.split()[0].replace(",", "")) for x in out.split("$")[1:3])
    assert batch == pytest.approx(online * BATCH_PRICE_FACTOR, abs=0.01) and online > 0
    assert server[0].requests == 0 and server[0].batches == {}


def test_a_stage_without_a_batch_api_is_materialized_directly(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path / "w.duckdb")
    made: list[tuple[str, list[str]]] = []
    outcomes = run_batch_backfill(
        warehouse, {"key_info": ["p1"]}, lambda asset, keys: made.append((asset, list(keys))),
        env={}, progress=lambda _: None,
    )
    assert made == [("key_info", ["p1"])]
    assert [(o.asset, o.through_batch) for o in outcomes] == [("key_info", False)]


@pytest.mark.slow
def test_miko_batch_backfill_goes_through_batches_and_materializes_from_the_cache(
    server: tuple[FakeLLMServer, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake, url = server
    use_provider(monkeypatch, url, MIKO_CAPTIONS_IMAGE_MAX_SIDE="256", MIKO_CAPTIONS_IMAGE_DETAIL="low")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    path = tmp_path / "w.duckdb"
    warehouse = Warehouse(path)
    ingest_sample(warehouse, tmp_path, 2)
    with dg.DagsterInstance.get() as instance:
        register_batches(instance, warehouse)
        resources = {"warehouse": WarehouseResource(path=str(path))}
        for partition in PARTITIONS:
            assert dg.materialize([posts], partition_key=partition, instance=instance, resources=resources).success

    # The provider ends submitted batches on its own time.
    stop = threading.Event()

    def provider_works() -> None:
        while not stop.wait(0.5):
            fake.complete_batches()

    worker = threading.Thread(target=provider_works, daemon=True)
    worker.start()
    try:
        assert cli.main(["--warehouse", str(path), "batch", "backfill", "--poll-s", "0.2"]) == 0
    finally:
        stop.set()
        worker.join()
    out = capsys.readouterr().out
    assert "with openai/gpt-4o-mini: at most $" in out.splitlines()[0]
    assert out.count(": ok") == 6 and "captions, key_info, intentions materialized" in out

    # One batch per partition and stage; every answer came from them: the fake served each
    # batch item once and no online call. Per post: one caption, one call per key-information
    # field (5) and one per relation (10), the per-relation defaults.
    items = [item for batch in fake.batch_items.values() for item in batch]
    assert len(fake.batches) == 6 and len(items) == 2 * (1 + 5 + 10)
    assert fake.requests == len(items)
    for table in ("captions", "key_info"):
        assert warehouse.rows(f"SELECT status, count(*) FROM {table} GROUP BY status") == [("ok", 2)]
    assert warehouse.rows("SELECT post_id, count(*) FROM intentions GROUP BY 1 ORDER BY 1") == [
        ("sample:s01", 10), ("sample:s02", 10)
    ]
    for stage, cost, tokens_in, tokens_out in warehouse.rows(
        "SELECT stage, cost_usd, tokens_in, tokens_out FROM llm_calls"
    ):
        assert cost == pytest.approx(BATCH_PRICE_FACTOR * (tokens_in * 0.15 + tokens_out * 0.60) / 1e6), stage
    # The captions' images went at the stage's size and detail.
    images = sent_images(items)
    assert len(images) == 2 and all(image["detail"] == "low" for image in images)

    # Run again: everything is cached, nothing is submitted, the partitions are made again.
    made: list[str] = []

    def record(asset: str, keys: Sequence[str]) -> None:
        made.append(asset)

    again = run_batch_backfill(warehouse, {"intentions": PARTITIONS}, record, poll_interval_s=0, progress=lambda _: None)
    assert again[0].submitted == 0 and again[0].batch_ids == [] and made == ["intentions"]
    assert len(fake.batches) == 6

    # A new image setting makes the captions stale; `miko backfill --stale --batch` sends exactly
    # those partitions (and the same ones downstream) through batches, at the new setting.
    monkeypatch.setenv("MIKO_CAPTIONS_IMAGE_DETAIL", "high")
    old_versions = {v for (v,) in warehouse.rows("SELECT DISTINCT code_version FROM captions")}
    worker = threading.Thread(target=provider_works, daemon=True)
    stop.clear()
    worker.start()
    try:
        assert cli.main(["--warehouse", str(path), "backfill", "--stale", "--asset", "captions", "--batch",
                         "--poll-s", "0.2"]) == 0
    finally:
        stop.set()
        worker.join()
    out = capsys.readouterr().out
    assert f"captions: 2 partition(s): {', '.join(PARTITIONS)}" in out
    assert "captions, key_info, intentions materialized" in out
    new_items = [item for batch in fake.batch_items.values() for item in batch][len(items):]
    new_images = sent_images(new_items)
    assert len(new_images) == 2 and all(image["detail"] == "high" for image in new_images)
    new_versions = {v for (v,) in warehouse.rows("SELECT DISTINCT code_version FROM captions")}
    assert new_versions.isdisjoint(old_versions) and len(new_versions) == 1
    assert cli.main(["--warehouse", str(path), "backfill", "--stale", "--asset", "captions", "--batch", "--dry-run"]) == 0
    assert "nothing is stale" in capsys.readouterr().out
