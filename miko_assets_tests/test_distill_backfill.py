"""The distillation story end to end with the embedded model, in a real `dagster dev`:
materialize every stage, change the intentions configuration, reload, find the stale partitions,
backfill them from the UI's GraphQL API, and check history, lineage and the call cache."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from miko_assets.devtools.dagster_dev import (
    dagster_dev,
    launch_backfill,
    prepare_workdir,
    project_env,
    reload_location,
    wait_for_backfill,
)
from miko_assets.stages.staleness import stale_partitions
from miko_assets.warehouse.lineage import intention_card
from miko_assets.warehouse.warehouse import Warehouse
from miko_assets_tests.paths import REPO_ROOT

pytestmark = pytest.mark.slow

POSTS = [
    {"id": "a", "text": "Monday again. Love it when the train is late ☕ #commute", "image": "cup.jpg", "label": 1},
    {"id": "b", "text": "Finished my first 10k run today, so proud!", "label": 0},
]


def _miko(workdir: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "miko_assets.cli", *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _calls_by_stage(wh: Warehouse) -> dict[str, int]:
    return dict(wh.rows("SELECT stage, count(*) FROM llm_calls GROUP BY stage"))


def test_materialize_change_model_config_and_backfill_stale_partitions(tmp_path: Path) -> None:
    prepare_workdir(tmp_path)
    prompts = tmp_path / "prompts"
    shutil.copytree(REPO_ROOT / "prompts", prompts)
    env = project_env(tmp_path, MIKO_PROMPTS_DIR=str(prompts))
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (96, 64), (120, 70, 30)).save(images / "cup.jpg")
    data = tmp_path / "tiny.jsonl"
    data.write_text("\n".join(json.dumps(p) for p in POSTS) + "\n")
    out = _miko(tmp_path, env, "ingest", "jsonl", str(data), "--split", "train", "--images", str(images), "--batch-size", "1")
    batches = ["tiny-train-0000", "tiny-train-0001"]
    assert all(b in out for b in batches)
    wh = Warehouse(tmp_path / "warehouse.duckdb")

    with dagster_dev(tmp_path, env) as ui:
        first = launch_backfill(ui, ["posts", "captions", "key_info", "intentions"], batches)
        assert wait_for_backfill(ui, first) in ("COMPLETED", "COMPLETED_SUCCESS")

        # Ten rows per post, each ok or with a reason, and a lineage card for every one.
        per_post = wh.rows("SELECT post_id, count(*), count(*) FILTER (WHERE status <> 'ok' AND error IS NULL) FROM intentions GROUP BY 1")
        assert sorted(p for p, _, _ in per_post) == ["tiny:a", "tiny:b"]
        assert all(n == 10 and unexplained == 0 for _, n, unexplained in per_post)
        for (intention_id,) in wh.rows("SELECT intention_id FROM intentions"):
            card = intention_card(wh, intention_id)
            assert card["post"]["post_id"] and card["generation"]["llm_call_id"]
        first_version = wh.rows("SELECT DISTINCT code_version FROM intentions")
        calls_before = _calls_by_stage(wh)
        # The per-relation defaults: one key-information call per field (5) and post.
        assert calls_before["key_info"] == 2 * 5 and calls_before["intentions"] >= 2

        # Configuration B: another temperature for the intentions stage only, then a reload.
        stages = yaml.safe_load((prompts / "stages.yaml").read_text())
        stages["stages"]["intentions"]["params"]["temperature"] = 0.1
        (prompts / "stages.yaml").write_text(yaml.safe_dump(stages))
        reload_location(ui)

        # `miko stale` judges by the configuration the code location recorded: the
        # `stage_config_watch` sensor records the reloaded one on its next tick.
        deadline = time.monotonic() + 180
        while True:
            stale_out = _miko(tmp_path, env, "stale")
            if all(b in stale_out.split("intentions: current", 1)[1] for b in batches) or time.monotonic() > deadline:
                break
            time.sleep(5)
        assert "intentions: current intentions@v3" in stale_out
        intentions_section = stale_out.split("intentions: current", 1)[1]
        assert all(b in intentions_section for b in batches)
        captions_section = stale_out.split("captions: current", 1)[1].split("key_info:", 1)[0]
        assert "no stale partitions" in captions_section
        key_info_section = stale_out.split("key_info: current", 1)[1].split("intentions:", 1)[0]
        assert "no stale partitions" in key_info_section

        second = launch_backfill(ui, ["intentions"], batches)
        assert wait_for_backfill(ui, second) in ("COMPLETED", "COMPLETED_SUCCESS")

    new_version = wh.rows("SELECT DISTINCT code_version FROM intentions")
    assert len(new_version) == 1 and new_version != first_version
    assert stale_partitions(wh, "intentions", new_version[0][0]) == {}
    assert wh.rows("SELECT DISTINCT code_version FROM intentions_history") == first_version
    assert wh.rows("SELECT count(*) FROM intentions_history") == [(20,)]
    calls_after = _calls_by_stage(wh)
    assert calls_after["key_info"] == calls_before["key_info"]
    assert calls_after.get("captions", 0) == calls_before.get("captions", 0)
    assert calls_after["intentions"] >= calls_before["intentions"] + 2

    intention_id = wh.rows("SELECT intention_id FROM intentions ORDER BY post_id, relation_index LIMIT 1")[0][0]
    card = intention_card(wh, intention_id)
    assert card["generation"]["code_version"] == new_version[0][0]
    assert card["generation"]["params"]["temperature"] == 0.1
    assert [v["code_version"] for v in card["other_versions"]] == [first_version[0][0]]
    old_call = card["other_versions"][0]["llm_call_id"]
    assert wh.rows("SELECT count(*) FROM llm_calls WHERE call_id = ?", [old_call]) == [(1,)]
