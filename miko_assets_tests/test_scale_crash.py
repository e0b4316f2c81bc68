"""Crash recovery, small: `dagster dev` and every run worker killed mid-backfill. Once
`miko fail-lost-runs` has marked the lost runs failed and `dagster dev` is back, run retries finish
the backfill with no row lost or duplicated and no LLM call repeated that had been recorded as a
success."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from miko_assets.warehouse.warehouse import Warehouse
from miko_assets_tests.dagster_dev import (
    dagster_dev,
    launch_backfill,
    prepare_workdir,
    wait_for_backfill,
)
from miko_assets_tests.miko_answer_server import (
    AnswerServer,
    ServerOptions,
    answer_server,
    fingerprint_hash,
)
from miko_assets_tests.scale_rig import (
    DISTILL_ASSETS,
    dagster_dev_pid,
    distill_env,
    failures_by_reason,
    ingest,
    integrity,
    kill_tree,
    miko,
    write_posts,
)

pytestmark = pytest.mark.slow

POSTS, BATCH_SIZE = 100, 25  # four partitions, about 250 requests
KILL_AFTER_ANSWERS = 70


def _wait_for_answers(server: AnswerServer, answers: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while server.stats()["answered"] < answers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the backfill did not reach {answers} answers in {timeout_s:.0f}s")
        time.sleep(0.2)


def _recorded_successes(warehouse: Warehouse) -> set[str]:
    return {fingerprint_hash(r) for (r,) in warehouse.rows("SELECT request_json FROM llm_calls WHERE status = 'ok'")}


def test_killing_dagster_dev_mid_backfill_loses_no_row_and_repeats_no_call(tmp_path: Path) -> None:
    prepare_workdir(tmp_path)
    with answer_server(ServerOptions(latency_ms=250, jitter_ms=100, seed=5)) as server:
        env = distill_env(tmp_path, server.base_url, MIKO_LLM_CONCURRENCY="2")
        data, images = write_posts(tmp_path / "data", POSTS, image_share=0.5, seed=3, name="crash")
        batches = ingest(tmp_path, env, data, images, BATCH_SIZE)
        with dagster_dev(tmp_path, env) as ui:
            backfill = launch_backfill(ui, DISTILL_ASSETS, batches)
            _wait_for_answers(server, KILL_AFTER_ANSWERS, timeout_s=300)
            assert kill_tree(dagster_dev_pid()) >= 5  # dev, webserver, daemon, code server, run workers

        warehouse = Warehouse(tmp_path / "warehouse.duckdb")
        recorded = _recorded_successes(warehouse)
        answered_at_kill = server.stats(hashes=True)["answered_by_hash"]
        # Answered but not yet flushed to llm_calls when the workers died: the only calls a crash may repeat.
        in_flight = set(answered_at_kill) - recorded
        assert recorded and recorded <= set(answered_at_kill)
        # At most about a second of answers (2 steps x 2 calls / 0.25 s), plus any wait for the file lock.
        assert len(in_flight) <= 40
        # The daemon beat moments ago, so the command takes it for alive unless forced.
        refused = miko(tmp_path, env, "fail-lost-runs")
        assert refused.returncode == 2 and "stop `dagster dev` first" in refused.stderr
        marked = miko(tmp_path, env, "fail-lost-runs", "--force")
        assert marked.returncode == 0 and "marked failed:" in marked.stdout, marked.stdout + marked.stderr

        with dagster_dev(tmp_path, env) as ui:
            assert wait_for_backfill(ui, backfill, timeout_s=600) == "COMPLETED_SUCCESS"

        stats = server.stats(hashes=True)
        answered = stats["answered_by_hash"]
        assert [h for h in recorded if answered[h] != answered_at_kill[h]] == []
        assert {h for h, n in answered.items() if n > 1} <= in_flight
        assert set(integrity(warehouse).values()) == {0}
        assert failures_by_reason(warehouse) == {}
        assert warehouse.rows("SELECT count(*) FROM posts") == [(POSTS,)]
        # Recovery re-made nothing: no superseded row versions.
        for table in ("captions", "key_info", "intentions"):
            assert warehouse.rows(f"SELECT count(*) FROM {table}_history") == [(0,)], table
