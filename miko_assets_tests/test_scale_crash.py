"""Crash recovery, small, two ways, each mid-backfill:
- one run worker is killed: the code server marks its run failed and run retries finish it;
- `dagster dev` and every run worker are killed: once `miko fail-lost-runs` has marked the lost
  runs failed and `dagster dev` is back, run retries finish the backfill.
Either way no row is lost or duplicated, and no LLM call is repeated that had been recorded as a
success: only answers that had not yet been flushed to `llm_calls` may be asked again."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
    backfill_runs,
    dagster_dev_pid,
    distill_env,
    failures_by_reason,
    ingest,
    integrity,
    kill_tree,
    miko,
    run_worker_pids,
    write_posts,
)
from miko_assets.warehouse.warehouse import Warehouse

pytestmark = pytest.mark.slow

POSTS, BATCH_SIZE = 100, 25  # four partitions, about 250 requests
KILL_AFTER_ANSWERS = 70


@dataclass
class Rig:
    workdir: Path
    env: dict[str, str]
    server: AnswerServer
    warehouse: Warehouse
    batches: list[str]


@dataclass
class AtKill:
    """What had been answered, and what recorded, just after the kill."""

    answered: dict[str, int]
    recorded: set[str]


@contextmanager
def _rig(workdir: Path, seed: int) -> Iterator[Rig]:
    prepare_workdir(workdir)
    with answer_server(ServerOptions(latency_ms=250, jitter_ms=100, seed=seed)) as server:
        env = distill_env(workdir, server.base_url, MIKO_LLM_CONCURRENCY="2")
        data, images = write_posts(workdir / "data", POSTS, image_share=0.5, seed=seed, name="crash")
        batches = ingest(workdir, env, data, images, BATCH_SIZE)
        yield Rig(workdir, env, server, Warehouse(workdir / "warehouse.duckdb"), batches)


def _wait_for_answers(server: AnswerServer, answers: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while server.stats()["answered"] < answers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the backfill did not reach {answers} answers in {timeout_s:.0f}s")
        time.sleep(0.2)


# The server may still finish answers the dead workers had asked for (latency 250 +- 100 ms).
SETTLE_S = 0.6


def _at_kill(rig: Rig) -> AtKill:
    """Taken just after the kill, once answers in flight have settled, and seconds before a retry
    can start: every answer the dead worker asked for is in `answered`, what it flushed in `recorded`."""
    time.sleep(SETTLE_S)
    answered = rig.server.stats(hashes=True)["answered_by_hash"]
    recorded = {fingerprint_hash(r) for (r,) in rig.warehouse.rows(
        "SELECT request_json FROM llm_calls WHERE status = 'ok'")}
    assert recorded, "the kill came before any call was stored"
    return AtKill(answered, recorded)


def _assert_recovered(rig: Rig, at_kill: AtKill) -> None:
    answered = rig.server.stats(hashes=True)["answered_by_hash"]
    assert [h for h in at_kill.recorded if answered[h] != 1] == [], "a recorded success was asked again"
    repeated = {h for h, n in answered.items() if n > 1}
    unflushed = set(at_kill.answered) - at_kill.recorded
    assert repeated <= unflushed
    # At most about a second of answers per step (2 calls / 0.25 s), plus any wait for the file lock.
    assert len(repeated) <= 40
    assert set(integrity(rig.warehouse).values()) == {0}
    assert failures_by_reason(rig.warehouse) == {}
    assert rig.warehouse.rows("SELECT count(*) FROM posts") == [(POSTS,)]
    # Recovery re-made no finished step: no superseded row versions.
    for table in ("captions", "key_info", "intentions"):
        assert rig.warehouse.rows(f"SELECT count(*) FROM {table}_history") == [(0,)], table


def _kill_one_run_worker() -> int:
    pids = run_worker_pids(dagster_dev_pid())
    assert pids, "no run worker was running"
    os.kill(pids[0], signal.SIGKILL)
    return pids[0]


def test_killing_one_run_worker_mid_backfill_loses_no_row_and_repeats_no_call(tmp_path: Path) -> None:
    with _rig(tmp_path, seed=4) as rig, dagster_dev(tmp_path, rig.env) as ui:
        backfill = launch_backfill(ui, DISTILL_ASSETS, rig.batches)
        _wait_for_answers(rig.server, KILL_AFTER_ANSWERS, timeout_s=300)
        _kill_one_run_worker()
        at_kill = _at_kill(rig)
        assert wait_for_backfill(ui, backfill, timeout_s=600) == "COMPLETED_SUCCESS"
        runs = backfill_runs(ui, backfill)
        _assert_recovered(rig, at_kill)
    # The killed run failed and a retry of it succeeded; every partition ends in a success.
    statuses = [r["status"] for r in runs]
    assert statuses.count("FAILURE") == 1 and statuses.count("SUCCESS") == len(rig.batches), statuses


def test_killing_dagster_dev_mid_backfill_loses_no_row_and_repeats_no_call(tmp_path: Path) -> None:
    with _rig(tmp_path, seed=5) as rig:
        with dagster_dev(tmp_path, rig.env) as ui:
            backfill = launch_backfill(ui, DISTILL_ASSETS, rig.batches)
            _wait_for_answers(rig.server, KILL_AFTER_ANSWERS, timeout_s=300)
            assert kill_tree(dagster_dev_pid()) >= 5  # dev, webserver, daemon, code server, run workers
        at_kill = _at_kill(rig)

        # The daemon beat moments ago, so the command takes it for alive unless forced.
        refused = miko(tmp_path, rig.env, "fail-lost-runs")
        assert refused.returncode == 2 and "stop `dagster dev` first" in refused.stderr
        marked = miko(tmp_path, rig.env, "fail-lost-runs", "--force")
        assert marked.returncode == 0 and "marked failed:" in marked.stdout, marked.stdout + marked.stderr

        with dagster_dev(tmp_path, rig.env) as ui:
            assert wait_for_backfill(ui, backfill, timeout_s=600) == "COMPLETED_SUCCESS"
        _assert_recovered(rig, at_kill)
