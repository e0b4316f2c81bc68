"""Scale behaviour, small: one backfill of four partitions under the default dagster.yaml limits,
through a provider that fails 10% of the attempts. Its runs share the warehouse file at the same
time, and `miko retry-failed` repairs what outlasted the retries once the fault is gone."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from miko_assets.devtools.answer_server import (
    AnswerServer,
    ServerOptions,
    answer_server,
    fingerprint_hash,
)
from miko_assets.devtools.dagster_dev import (
    dagster_dev,
    launch_backfill,
    prepare_workdir,
    wait_for_backfill,
)
from miko_assets.devtools.scale_rig import (
    DISTILL_ASSETS,
    FAULT_REASONS,
    backfill_runs,
    distill_env,
    failures_by_reason,
    ingest,
    integrity,
    miko,
    overlapping_runs,
    write_posts,
)
from miko_assets.stages.failures import failed_partitions
from miko_assets.warehouse.warehouse import Warehouse

pytestmark = pytest.mark.slow

POSTS, BATCH_SIZE = 320, 80  # four partitions, about 800 requests


@dataclass
class FaultyBackfill:
    workdir: Path
    env: dict[str, str]
    server: AnswerServer
    warehouse: Warehouse
    partitions: list[str]
    status: str
    runs: list[dict[str, Any]]


@pytest.fixture(scope="module")
def faulty_backfill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultyBackfill]:
    """One backfill of every stage through a server failing 10% of the attempts; `dagster dev`
    is stopped by the time the tests run, the server is still up."""
    workdir = tmp_path_factory.mktemp("scale")
    prepare_workdir(workdir)
    # A timeout fault hangs 3 s against a 1 s client timeout; with two attempts per call, about
    # 1% of the calls outlast their retries.
    options = ServerOptions(latency_ms=20, fault_rate=0.1, seed=11, hang_s=3, retry_after_s=0.2)
    with answer_server(options) as server:
        env = distill_env(workdir, server.base_url, MIKO_LLM_CONCURRENCY="8", MIKO_LLM_TIMEOUT_S="1",
                          MIKO_LLM_MAX_ATTEMPTS="2")
        data, images = write_posts(workdir / "data", POSTS, image_share=0.5, seed=2, name="faulty")
        partitions = ingest(workdir, env, data, images, BATCH_SIZE)
        with dagster_dev(workdir, env) as ui:
            backfill = launch_backfill(ui, DISTILL_ASSETS, partitions)
            status = wait_for_backfill(ui, backfill, timeout_s=600)
            runs = backfill_runs(ui, backfill)
        yield FaultyBackfill(workdir, env, server, Warehouse(workdir / "warehouse.duckdb"), partitions, status, runs)


def test_partition_runs_at_once_share_one_warehouse_file(faulty_backfill: FaultyBackfill) -> None:
    assert len(faulty_backfill.partitions) == 4 and faulty_backfill.status == "COMPLETED_SUCCESS"
    runs = faulty_backfill.runs
    # No run failed on the DuckDB file lock, though several wrote the file at the same time.
    assert sorted(r["status"] for r in runs) == ["SUCCESS"] * 4
    assert overlapping_runs(runs) >= 2
    assert set(integrity(faulty_backfill.warehouse).values()) == {0}


def test_failures_are_recorded_rows_and_retry_failed_repairs_them(faulty_backfill: FaultyBackfill) -> None:
    server, warehouse = faulty_backfill.server, faulty_backfill.warehouse
    stats = server.stats(hashes=True)
    assert set(stats["faults"]) == {"429", "500", "timeout", "malformed_body", "bad_answer"}

    # Every failure that outlasted the retries is a row with its reason, as is its LLM call.
    failures = failures_by_reason(warehouse)
    failed_rows = {t: sum(by_reason.values()) for t, by_reason in failures.items() if t != "llm_calls"}
    assert sum(failed_rows.values()) > 0, failures
    for table, by_reason in failures.items():
        assert set(by_reason) <= FAULT_REASONS, (table, by_reason)
    assert set(failed_partitions(warehouse)) == set(failed_rows)

    succeeded = {fingerprint_hash(r) for (r,) in warehouse.rows("SELECT request_json FROM llm_calls WHERE status = 'ok'")}
    answered_before = stats["answered_by_hash"]
    server.control(fault_rate=0.0)
    done = miko(faulty_backfill.workdir, faulty_backfill.env, "retry-failed", timeout_s=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "failed rows left: 0" in done.stdout

    assert failed_partitions(warehouse) == {}
    assert set(integrity(warehouse).values()) == {0}
    answered_after = server.stats(hashes=True)["answered_by_hash"]
    repeated = [h for h in succeeded if answered_after[h] != answered_before[h]]
    assert repeated == [], f"{len(repeated)} calls that had succeeded were made again"
    assert all(answered_before[h] == 1 for h in succeeded)
