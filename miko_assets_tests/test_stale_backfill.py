"""Stale at a glance and one action to rebuild it, in a real `dagster dev` with an answer server
that counts every call: change the intentions configuration and reload; the sensor runs the
staleness checks by itself and they say what changed; rebuild one partition by hand; then
`miko backfill --stale`, from a shell whose environment differs from the code location's,
launches one backfill that rebuilds exactly the other stale partitions and calls nothing else."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from miko_assets.stages.staleness import stale_partitions
from miko_assets.warehouse.lineage import intention_card
from miko_assets.warehouse.warehouse import Warehouse
from miko_assets.devtools.answer_server import answer_server
from miko_assets.devtools.dagster_dev import (
    REPO, DagsterUI, dagster_dev, launch_backfill, prepare_workdir, project_env, reload_location, wait_for_backfill,
)
from miko_assets.devtools.scale_rig import DISTILL_ASSETS, distill_env, ingest, miko, write_posts

pytestmark = pytest.mark.slow

POSTS, BATCH_SIZE = 6, 2  # three partitions


def test_stale_partitions_show_by_themselves_and_one_backfill_rebuilds_exactly_them(tmp_path: Path) -> None:
    prepare_workdir(tmp_path)
    prompts = tmp_path / "prompts"
    shutil.copytree(REPO / "prompts", prompts)
    # The answer server writes the one-call answers (key_info and intentions v2).
    stages = yaml.safe_load((prompts / "stages.yaml").read_text())
    for stage in ("key_info", "intentions"):
        stages["stages"][stage]["prompt_version"] = "v2"
    (prompts / "stages.yaml").write_text(yaml.safe_dump(stages))
    data, images = write_posts(tmp_path, POSTS, image_share=0.0, name="stale")
    wh = Warehouse(tmp_path / "warehouse.duckdb")
    with answer_server() as server:
        env = distill_env(tmp_path, server.base_url, MIKO_PROMPTS_DIR=str(prompts))
        partitions = ingest(tmp_path, env, data, images, BATCH_SIZE)
        assert len(partitions) == 3
        with dagster_dev(tmp_path, env) as ui:
            first = launch_backfill(ui, DISTILL_ASSETS, partitions)
            assert wait_for_backfill(ui, first) in ("COMPLETED", "COMPLETED_SUCCESS")
            first_version = wh.rows("SELECT DISTINCT code_version FROM intentions")
            intention_calls_per_post = server.stats()["stages"]["intentions"] / POSTS

            # Configuration B: a cooler intentions stage in the prompts folder, then a reload.
            stages = yaml.safe_load((prompts / "stages.yaml").read_text())
            stages["stages"]["intentions"]["params"]["temperature"] = 0.1
            (prompts / "stages.yaml").write_text(yaml.safe_dump(stages))
            reload_location(ui)

            # Nobody presses Execute: the sensor records the configuration and runs the checks.
            check = _wait_for_check(ui, "intentions", lambda m: m["stale_count"] == 3)
            assert "temperature 0.3 → 0.1" in check["stale"]
            assert _wait_for_check(ui, "key_info", lambda m: "stale_count" in m)["stale_count"] == 0

            # One partition rebuilt by hand, so two are stale now.
            assert ui.wait_for_run(ui.launch("distill_job", partitions[2], ["intentions"])) == "SUCCESS"
            by_hand = wh.rows("SELECT DISTINCT dagster_run_id, created_at FROM intentions WHERE batch = ?", [partitions[2]])
            calls_before = server.stats()["stages"]

            # A shell with none of the code location's settings (no prompts folder, no providers).
            shell = project_env(tmp_path)
            stale_out = _ok(miko(tmp_path, shell, "stale"))
            assert "judged against the configuration the code location (dagster dev) loaded" in stale_out
            section = stale_out.split("intentions: current", 1)[1]
            assert partitions[0] in section and partitions[1] in section and partitions[2] not in section
            assert "what changed: temperature 0.3 → 0.1" in section
            assert stale_out.count("no stale partitions") == 2  # captions and key_info

            launched = _ok(miko(tmp_path, shell, "backfill", "--stale"))
            assert f"intentions: 2 partition(s): {partitions[0]}, {partitions[1]}" in launched
            assert "key_info:" not in launched and "captions:" not in launched
            backfill_id = launched.split("backfill ", 1)[1].split()[0]
            assert wait_for_backfill(ui, backfill_id) in ("COMPLETED", "COMPLETED_SUCCESS")
            runs = _runs_of(ui, backfill_id)

        calls_after = server.stats()["stages"]
    # Exactly the stale partitions, only the intentions step, one call set per post, nothing else.
    assert sorted(r["partition"] for r in runs) == partitions[:2]
    assert all(r["assets"] == ["intentions"] and r["status"] == "SUCCESS" for r in runs)
    made = {stage: n - calls_before.get(stage, 0) for stage, n in calls_after.items() if n != calls_before.get(stage, 0)}
    assert made == {"intentions": 2 * BATCH_SIZE * intention_calls_per_post}

    new_version = wh.rows("SELECT DISTINCT code_version FROM intentions")
    assert len(new_version) == 1 and new_version != first_version
    assert stale_partitions(wh, "intentions", new_version[0][0]) == {}
    assert wh.rows("SELECT DISTINCT dagster_run_id, created_at FROM intentions WHERE batch = ?", [partitions[2]]) == by_hand
    # Every replaced version is addressable and says what replaced it and why.
    intention_id = wh.rows("SELECT intention_id FROM intentions WHERE batch = ? LIMIT 1", [partitions[0]])[0][0]
    card = intention_card(wh, intention_id)
    [old] = card["other_versions"]
    old_card = intention_card(wh, old["version_id"])
    assert old_card["replaced_by"]["version_id"] == card["version_id"]
    assert old_card["replaced_by"]["why"] == ["temperature 0.3 → 0.1"]


def _runs_of(ui: DagsterUI, backfill_id: str) -> list[dict[str, Any]]:
    """The partition and assets of every run the backfill launched."""
    results = ui.graphql(
        """query($filter: RunsFilter!) { runsOrError(filter: $filter) { ... on Runs { results {
             status tags { key value } assetSelection { path } } } } }""",
        {"filter": {"tags": [{"key": "dagster/backfill", "value": backfill_id}]}},
    )["runsOrError"]["results"]
    return [{"status": r["status"], "partition": {t["key"]: t["value"] for t in r["tags"]}.get("dagster/partition"),
             "assets": sorted("/".join(a["path"]) for a in r["assetSelection"])} for r in results]


def _ok(done: Any) -> str:
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _wait_for_check(ui: DagsterUI, asset: str, done: Callable[[dict[str, Any]], bool], timeout_s: float = 300) -> dict[str, Any]:
    """The metadata of the newest evaluation of the asset's staleness check, once `done` says so."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        executions = ui.graphql(
            """query($key: AssetKeyInput!, $name: String!) { assetCheckExecutions(assetKey: $key, checkName: $name, limit: 1) {
                 evaluation { metadataEntries { label
                   ... on IntMetadataEntry { intValue } ... on MarkdownMetadataEntry { mdStr } } } } }""",
            {"key": {"path": [asset]}, "name": f"{asset}_matches_current_config"},
        )["assetCheckExecutions"]
        evaluation = executions[0]["evaluation"] if executions else None
        if evaluation:
            metadata = {e["label"]: e.get("intValue", e.get("mdStr")) for e in evaluation["metadataEntries"]}
            if done(metadata):
                return metadata
        time.sleep(2)
    raise TimeoutError(f"no evaluation of {asset}'s staleness check passed the condition")
