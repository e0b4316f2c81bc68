"""The README's first command: `miko demo` on the embedded defaults, in a fresh project folder,
then again (every answer from the call cache, nothing ingested twice)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from miko_assets.devtools.dagster_dev import prepare_workdir, project_env
from miko_assets.distill.relations import RELATIONS
from miko_assets.stages.knowledge_base import intention_quality
from miko_assets.warehouse.warehouse import Warehouse

pytestmark = pytest.mark.slow

SAMPLE_POSTS = 24


def _demo(workdir: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "miko_assets.cli", "demo"], cwd=workdir, env=project_env(workdir),
                          capture_output=True, text=True, timeout=1800, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_demo_distils_the_sample_and_a_second_run_is_served_from_the_cache(tmp_path: Path) -> None:
    prepare_workdir(tmp_path)
    first = _demo(tmp_path)
    warehouse = Warehouse(tmp_path / "warehouse.duckdb")
    assert f"ingested {SAMPLE_POSTS} new posts" in first.stdout
    batches = [b for (b,) in warehouse.rows("SELECT DISTINCT batch FROM ingested_posts ORDER BY 1")]
    assert batches == ["sample-sample-0000", "sample-sample-0001"]
    for batch in batches:
        assert f"distill_job [{batch}] run" in first.stdout
    assert "knowledge_base_job run" in first.stdout and "FAILED" not in first.stdout
    # The lineage card of one intention closes the summary.
    assert "prompt" in first.stdout.rsplit("warehouse ", 1)[1].lower()

    # Every ingested row is a post or a rejection with a reason; every post has its ten relations.
    posts = warehouse.rows("SELECT count(*) FROM posts")[0][0]
    rejected = warehouse.rows("SELECT count(DISTINCT row_key) FROM rejected_posts WHERE rejected_part = 'post'")[0][0]
    assert posts + rejected == SAMPLE_POSTS and posts > 0
    assert warehouse.rows("SELECT count(*) FROM captions") == [(posts,)]
    assert warehouse.rows("SELECT count(*) FROM key_info") == [(posts,)]
    per_post = warehouse.rows("SELECT count(*), count(DISTINCT relation) FROM intentions GROUP BY post_id")
    assert len(per_post) == posts and set(per_post) == {(len(RELATIONS), len(RELATIONS))}
    # The quality floor (per-relation completion on the embedded model): at least 95% well-formed.
    assert "quality floor of the intentions" in first.stdout
    quality = intention_quality(warehouse).set_index("relation")
    assert quality.loc["ALL", "well_formed"] >= 0.95, quality
    calls = warehouse.rows("SELECT count(*) FROM llm_calls")[0][0]

    second = _demo(tmp_path)
    assert f"ingested 0 new posts ({SAMPLE_POSTS} already there)" in second.stdout
    assert warehouse.rows("SELECT count(*) FROM llm_calls") == [(calls,)]
    assert warehouse.rows("SELECT count(*) FROM posts") == [(posts,)]
