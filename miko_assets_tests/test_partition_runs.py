"""Backfills in a real `dagster dev` with this repository's dagster.yaml: one run per partition at
a time (issue 15, item 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from miko_assets.devtools.answer_server import ServerOptions, answer_server
from miko_assets.devtools.dagster_dev import DagsterUI, dagster_dev, launch_backfill, prepare_workdir, wait_for_backfill
from miko_assets.devtools.scale_rig import DISTILL_ASSETS, distill_env, ingest, write_posts

pytestmark = pytest.mark.slow

_RUNS = """
query($filter: RunsFilter!) { runsOrError(filter: $filter, limit: 200) {
  ... on Runs { results { runId status startTime endTime tags { key value }
    assetMaterializations { assetKey { path } metadataEntries { label ... on FloatMetadataEntry { floatValue } } } } }
} }
"""


def _runs(ui: DagsterUI, backfill_id: str) -> list[dict[str, Any]]:
    runs = ui.graphql(_RUNS, {"filter": {"tags": [{"key": "dagster/backfill", "value": backfill_id}]}})
    results = runs["runsOrError"]["results"]
    for run in results:
        run["partition"] = next(t["value"] for t in run["tags"] if t["key"] == "dagster/partition")
    return results


def test_a_second_backfill_over_running_partitions_waits_and_pays_nothing_twice(tmp_path: Path) -> None:
    prepare_workdir(tmp_path)
    with answer_server(ServerOptions(latency_ms=400)) as server:
        env = distill_env(tmp_path, server.base_url, MIKO_LLM_CONCURRENCY="2")
        data, images = write_posts(tmp_path / "data", 8, image_share=0.5, seed=5, name="twice")
        partitions = ingest(tmp_path, env, data, images, batch_size=4)
        with dagster_dev(tmp_path, env) as ui:
            backfills = [launch_backfill(ui, DISTILL_ASSETS, partitions) for _ in range(2)]
            assert [wait_for_backfill(ui, b, timeout_s=600) for b in backfills] == ["COMPLETED_SUCCESS"] * 2
            runs = [run for b in backfills for run in _runs(ui, b)]
        stats = server.stats()

    assert len(runs) == 4 and {r["status"] for r in runs} == {"SUCCESS"}
    for partition in partitions:
        first, second = sorted((r for r in runs if r["partition"] == partition), key=lambda r: r["startTime"])
        assert second["startTime"] >= first["endTime"], f"two runs of {partition} ran at once"
    assert stats["answered_more_than_once"] == 0, "no call was paid for twice"
    assert stats["answered"] == stats["distinct_requests"]
