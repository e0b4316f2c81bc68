"""`miko fail-lost-runs`: after `dagster dev` died, its interrupted runs are marked failed (so run
retries resume them), finished runs are left alone, and nothing is touched while a daemon is alive."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
from dagster._daemon.types import DaemonHeartbeat

from miko_assets.cli import main
from miko_assets.instance import open_instance
from miko_assets_tests.paths import REPO_ROOT


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with the repository's dagster.yaml, as `dagster dev` is run from."""
    shutil.copy(REPO_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return tmp_path


def _add_run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus) -> str:
    run = dg.DagsterRun(job_name="distill_job", run_id=str(uuid.uuid4()), status=status)
    instance.add_run(run)
    return run.run_id


def test_interrupted_runs_are_failed_and_finished_runs_kept(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with open_instance() as instance:
        interrupted = {_add_run(instance, s) for s in (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING,
                                                      dg.DagsterRunStatus.CANCELING)}
        done = _add_run(instance, dg.DagsterRunStatus.SUCCESS)
        canceled = _add_run(instance, dg.DagsterRunStatus.CANCELED)

    assert main(["fail-lost-runs"]) == 0
    out = capsys.readouterr().out
    assert "3 lost runs marked failed" in out and all(run_id in out for run_id in interrupted)

    with open_instance() as instance:
        status = {run_id: instance.get_run_by_id(run_id).status for run_id in [*interrupted, done, canceled]}
        failures = instance.get_records_for_run(next(iter(interrupted)),
                                                of_type=dg.DagsterEventType.RUN_FAILURE).records
    assert {status[r] for r in interrupted} == {dg.DagsterRunStatus.FAILURE}
    assert status[done] == dg.DagsterRunStatus.SUCCESS and status[canceled] == dg.DagsterRunStatus.CANCELED
    assert "fail-lost-runs" in failures[0].event_log_entry.dagster_event.message
    # Once done, there is nothing left to mark.
    assert main(["fail-lost-runs"]) == 0
    assert "0 lost runs" in capsys.readouterr().out


def test_refuses_while_a_daemon_is_alive(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with open_instance() as instance:
        run_id = _add_run(instance, dg.DagsterRunStatus.STARTED)
        instance.add_daemon_heartbeat(DaemonHeartbeat(time.time(), "SENSOR", "dev", None))

    assert main(["fail-lost-runs"]) == 2
    assert "stop `dagster dev` first" in capsys.readouterr().err
    with open_instance() as instance:
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED

    assert main(["fail-lost-runs", "--force"]) == 0
    with open_instance() as instance:
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
