"""Generation assets report a data version from what they wrote (issue 15, item 6)."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from miko_assets.assets.distill import _generation_asset
from miko_assets.assets.posts import posts
from miko_assets.devtools.fake_llm_server import FakeLLMServer
from miko_assets.ingest.batches import ingest_file
from miko_assets.partitions import register_batches
from miko_assets.resources import LLMResource, WarehouseResource
from miko_assets.stages.common import data_version
from miko_assets.stages.versions import current_stage_specs
from miko_assets.warehouse.warehouse import Warehouse


def test_data_version_ignores_the_run_and_follows_the_content() -> None:
    rows = pd.DataFrame({"post_id": ["a", "b"], "text": ["x", None], "dagster_run_id": ["r1", "r1"],
                         "created_at": pd.to_datetime(["2026-01-01", "2026-01-01"])})
    rerun = rows.assign(dagster_run_id="r2", created_at=pd.Timestamp("2026-02-02")).iloc[::-1]
    assert data_version(rows) == data_version(rerun)
    assert data_version(rows) != data_version(rows.assign(text=["x", "y"]))


def _latest_version(instance: dg.DagsterInstance, asset: str, partition: str) -> str:
    (record,) = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    return record.asset_materialization.tags["dagster/data_version"]


def test_a_rerun_served_from_the_cache_leaves_downstream_fresh(
    tmp_path: Path, server: tuple[FakeLLMServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = server
    for name, value in {"MIKO_OPENAI_BASE_URL": f"{url}/v1", "MIKO_KEY_INFO_PROVIDER": "openai",
                        "MIKO_KEY_INFO_MODEL": "gpt-4o-mini", "MIKO_INTENTIONS_PROVIDER": "openai",
                        "MIKO_INTENTIONS_MODEL": "gpt-4o-mini",
                        # one JSON call per post each (the fake server fills JSON schemas)
                        "MIKO_KEY_INFO_PROMPT_VERSION": "v2", "MIKO_INTENTIONS_PROMPT_VERSION": "v2"}.items():
        monkeypatch.setenv(name, value)
    specs = current_stage_specs()
    generation = {name: _generation_asset(specs[name]) for name in ("captions", "key_info", "intentions")}
    assets = [posts, *generation.values()]
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"id": str(i), "text": f"post {i} script=fill"}) + "\n" for i in range(2)))
    wh = Warehouse(tmp_path / "w.duckdb")
    (batch,) = ingest_file(wh, "jsonl", data, split="train").new_batches
    resources = {"warehouse": WarehouseResource(path=str(wh.path)), "llm": LLMResource()}

    with dg.instance_for_test() as instance:
        register_batches(instance, wh)
        assert dg.materialize(assets, partition_key=batch, instance=instance, resources=resources).success
        calls, first = fake.requests, _latest_version(instance, "key_info", batch)
        assert calls == 4  # two posts, key info and intentions

        # Everything upstream of intentions again: the same posts, and answers from the cache.
        again = dg.materialize(assets, partition_key=batch, instance=instance, resources=resources,
                               selection=["posts", "captions", "key_info"])
        assert again.success and fake.requests == calls, "served from the cache"
        assert _latest_version(instance, "key_info", batch) == first

        resolver = get_stale_status_resolver(instance, assets)
        assert resolver.get_status(dg.AssetKey("intentions"), batch) == StaleStatus.FRESH
