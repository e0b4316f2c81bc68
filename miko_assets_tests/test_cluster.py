"""miko across hosts, on one machine: Postgres (Dagster's instance storage and the DuckLake
catalog), Redis (Celery broker and results), a code server, the daemon, the webserver and two
`dagster-celery` workers standing for two hosts, configured by deploy/cluster/.

1. A backfill of six partitions through the generation stages, against the answer server with
   faults on: every run succeeds, both workers run runs, and the DuckLake holds one caption, one
   key-info row and ten intentions per post, nothing lost or doubled, no successful call made
   twice, lineage resolving from the lake; runs wrote at the same time.
2. Six more partitions, and the worker process running one of them is SIGKILLed mid-run: Dagster's
   run monitoring asks Celery, marks the run failed, run retries start it again on a worker, and
   the guarantees above hold.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import celery
import pytest
import yaml

from miko_assets.devtools.answer_server import (
    AnswerServer,
    ServerOptions,
    answer_server,
    fingerprint_hash,
)
from miko_assets.devtools.cluster import Cluster, cluster_env, cluster_services, dagster_cluster
from miko_assets.devtools.dagster_dev import launch_backfill, wait_for_backfill
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
from miko_assets.warehouse.lineage import intention_card
from miko_assets.warehouse.location import parse_location
from miko_assets.warehouse.warehouse import Warehouse

pytestmark = pytest.mark.slow

TASK_TAG = "dagster-celery/task_id"


@dataclass
class Rig:
    cluster: Cluster
    server: AnswerServer
    warehouse: Warehouse


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    workdir = tmp_path_factory.mktemp("cluster")
    # A timeout fault hangs 3 s against a 1 s client timeout; two attempts per call.
    options = ServerOptions(latency_ms=20, fault_rate=0.1, seed=12, hang_s=3, retry_after_s=0.2)
    with cluster_services(workdir / "services") as services, answer_server(options) as server:
        base = distill_env(workdir, server.base_url, MIKO_LLM_CONCURRENCY="4", MIKO_LLM_TIMEOUT_S="1",
                           MIKO_LLM_MAX_ATTEMPTS="2")
        env = cluster_env(workdir, base, services)
        warehouse = Warehouse(parse_location(env["MIKO_WAREHOUSE"], env["MIKO_WAREHOUSE_DATA"]))
        with dagster_cluster(workdir, env, workers=2, concurrency=2) as cluster:
            yield Rig(cluster, server, warehouse)


def _ingest(rig: Rig, posts: int, batch_size: int, name: str, seed: int) -> list[str]:
    workdir = rig.cluster.workdir
    data, images = write_posts(workdir / name, posts, image_share=0.5, seed=seed, name=name)
    return ingest(workdir, rig.cluster.env, data, images, batch_size, warehouse=rig.warehouse)


def _ok_call_hashes(warehouse: Warehouse) -> set[str]:
    return {fingerprint_hash(r) for (r,) in warehouse.rows("SELECT request_json FROM llm_calls WHERE status = 'ok'")}


@dataclass
class AtKill:
    """What had been answered, and what recorded as a success, just after the kill."""

    answered: dict[str, int]
    recorded: set[str]


def _assert_lake_is_whole(rig: Rig, runs: list[dict], at_kill: AtKill | None = None) -> None:
    assert set(integrity(rig.warehouse).values()) == {0}, integrity(rig.warehouse)
    for table, by_reason in failures_by_reason(rig.warehouse).items():
        assert set(by_reason) <= FAULT_REASONS, (table, by_reason)
    answered = rig.server.stats(hashes=True)["answered_by_hash"]
    recorded = at_kill.recorded if at_kill else _ok_call_hashes(rig.warehouse)
    assert [h for h in recorded if answered[h] != 1] == [], "a successful call was made twice"
    if at_kill:  # only answers the killed process had not stored yet may have been asked again
        assert {h for h, n in answered.items() if n > 1} <= set(at_kill.answered) - at_kill.recorded
    # The lineage of an intention resolves from the lake.
    intention_id, post_id = rig.warehouse.rows("SELECT intention_id, post_id FROM intentions WHERE status = 'ok' LIMIT 1")[0]
    card = intention_card(rig.warehouse, intention_id)
    assert card["post"]["post_id"] == post_id and card["generation"]["llm_call_id"]
    # Every run was taken by one of the workers.
    received = rig.cluster.tasks_by_worker()
    for run in runs:
        assert sum(run["task_id"] in tasks for tasks in received.values()) == 1, run


def _runs(rig: Rig, backfill: str) -> list[dict]:
    runs = backfill_runs(rig.cluster.ui, backfill)
    tags = _run_tags(rig, [r["runId"] for r in runs])
    for run in runs:
        run["task_id"] = tags[run["runId"]].get(TASK_TAG)
        run["parent"] = tags[run["runId"]].get("dagster/parent_run_id")
    return runs


def _run_tags(rig: Rig, run_ids: list[str]) -> dict[str, dict[str, str]]:
    found = {}
    for run_id in run_ids:
        data = rig.cluster.ui.graphql(
            "query($id: ID!) { runOrError(runId: $id) { ... on Run { tags { key value } } } }", {"id": run_id})
        found[run_id] = {t["key"]: t["value"] for t in data["runOrError"]["tags"]}
    return found


def test_two_workers_backfill_six_partitions_into_one_lake(rig: Rig) -> None:
    checked = miko(rig.cluster.workdir, rig.cluster.env, "check")
    assert checked.returncode == 0 and checked.stdout.count("ok   ") == 3, checked.stdout + checked.stderr
    assert "CeleryRunLauncher" in checked.stdout and "ducklake:postgres:" in checked.stdout
    partitions = _ingest(rig, posts=48, batch_size=8, name="lake", seed=3)
    assert len(partitions) == 6
    started = time.monotonic()
    backfill = launch_backfill(rig.cluster.ui, DISTILL_ASSETS, partitions)
    assert wait_for_backfill(rig.cluster.ui, backfill, timeout_s=600) == "COMPLETED_SUCCESS"
    print(f"backfill of 6 partitions on 2 workers: {time.monotonic() - started:.0f} s")
    runs = _runs(rig, backfill)
    assert sorted(r["status"] for r in runs) == ["SUCCESS"] * 6
    received = rig.cluster.tasks_by_worker()
    assert all(any(r["task_id"] in received[w] for r in runs) for w in received), "a worker ran no run"
    assert overlapping_runs(runs) >= 2  # runs wrote the lake at the same time: there is no file lock
    assert rig.server.stats()["faults"], "no fault was injected"
    assert rig.warehouse.rows("SELECT count(*) FROM posts") == [(48,)]
    _assert_lake_is_whole(rig, runs)


def _started_run(rig: Rig, backfill: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        started = [r for r in _runs(rig, backfill) if r["status"] == "STARTED" and r["task_id"]]
        if started and rig.server.stats()["answered"] > 0:
            return started[0]
        time.sleep(0.5)
    raise TimeoutError("no run started")


def test_a_worker_killed_mid_run_is_detected_and_its_run_retried(rig: Rig) -> None:
    rig.server.control(latency_ms=250, jitter_ms=100)
    before = rig.server.stats()["answered"]
    partitions = _ingest(rig, posts=96, batch_size=16, name="kill", seed=4)
    backfill = launch_backfill(rig.cluster.ui, DISTILL_ASSETS, partitions)
    victim = _started_run(rig, backfill, timeout_s=300)
    # Wait until the run has had answers, then kill the worker process running it (Celery's
    # STARTED state names it), as the OOM killer would.
    deadline = time.monotonic() + 120
    while rig.server.stats()["answered"] < before + 20 and time.monotonic() < deadline:
        time.sleep(0.2)
    app = celery.Celery(broker=rig.cluster.env["CELERY_BROKER_URL"], backend=rig.cluster.env["CELERY_RESULT_BACKEND"])
    state = app.AsyncResult(victim["task_id"])
    assert state.state == "STARTED", state.state
    os.kill(int(state.info["pid"]), signal.SIGKILL)
    time.sleep(0.6)  # answers in flight settle (250 +- 100 ms); a retry takes seconds to start
    at_kill = AtKill(rig.server.stats(hashes=True)["answered_by_hash"], _ok_call_hashes(rig.warehouse))

    assert wait_for_backfill(rig.cluster.ui, backfill, timeout_s=600) == "COMPLETED_SUCCESS"
    runs = _runs(rig, backfill)
    by_id = {r["runId"]: r for r in runs}
    assert by_id[victim["runId"]]["status"] == "FAILURE"
    retries = [r for r in runs if r["parent"] == victim["runId"]]
    assert [r["status"] for r in retries] == ["SUCCESS"], retries
    assert sorted(r["status"] for r in runs) == ["FAILURE"] + ["SUCCESS"] * 6
    assert rig.warehouse.rows("SELECT count(*) FROM posts") == [(48 + 96,)]
    _assert_lake_is_whole(rig, runs, at_kill)


def test_the_cluster_keeps_the_single_host_run_limits() -> None:
    """Runs, pools, per-partition limits and retries are the same on several hosts as in the
    repository's dagster.yaml: only storage, the coordinator and the launcher differ."""
    repo = Path(__file__).resolve().parents[1]
    single, cluster = (
        yaml.safe_load((repo / path).read_text()) for path in ("dagster.yaml", "deploy/cluster/dagster.yaml")
    )
    assert cluster["concurrency"] == single["concurrency"]
    assert cluster["run_retries"] == single["run_retries"]
    assert cluster["run_coordinator"]["class"] == "QueuedRunCoordinator"
