"""The Dagster instance that `miko` commands use: the same one `dagster dev` shows."""

from __future__ import annotations

import os
import time
from contextlib import AbstractContextManager
from pathlib import Path

import dagster as dg

from miko_assets.file_lock import file_lock


def open_instance() -> dg.DagsterInstance:
    """`$DAGSTER_HOME` when set; else the instance configured by `./dagster.yaml` (as `dagster dev`
    run from the repository root uses it), else a persistent `./.dagster_home`."""
    if os.environ.get("DAGSTER_HOME"):
        home = Path(os.environ["DAGSTER_HOME"])
        with _creating(home):
            return dg.DagsterInstance.get()
    cwd = Path.cwd()
    home = cwd / ".dagster_home"
    home.mkdir(exist_ok=True)
    with _creating(home):
        # The repository's dagster.yaml puts every store under ./.dagster_home itself.
        return dg.DagsterInstance.from_config(str(cwd if (cwd / "dagster.yaml").exists() else home))


def _creating(home: Path) -> AbstractContextManager[float]:
    """One process at a time opens the instance: two `miko` commands opening a new instance at
    once both create its SQLite tables, and one fails with "table already exists"."""
    return file_lock(home / ".miko-instance.lock")


LOST_RUN_STATUSES = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def daemon_heartbeat_age_s(instance: dg.DagsterInstance) -> float | None:
    """Seconds since the newest Dagster daemon heartbeat, or None if no daemon ever ran."""
    beats = instance.get_daemon_heartbeats().values()
    return time.time() - max(b.timestamp for b in beats) if beats else None


def fail_lost_runs(instance: dg.DagsterInstance, reason: str) -> list[str]:
    """Mark the runs left STARTING, STARTED or CANCELING as failed; returns their ids.

    The default run launcher has no worker health check, so runs whose workers died with
    `dagster dev` (or the machine) stay "started" for ever and hold their pool slots. Once
    failed, run retries (dagster.yaml) re-execute them from the failed steps and run monitoring
    frees their slots. Call it only while no run worker is alive.
    """
    lost = instance.get_runs(dg.RunsFilter(statuses=LOST_RUN_STATUSES))
    for run in lost:
        instance.report_run_failed(run, reason)
    return [run.run_id for run in lost]
