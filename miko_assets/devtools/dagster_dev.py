"""Start a real `dagster dev` (webserver + daemon) on 127.0.0.1 and talk GraphQL to it (tests, rehearsals)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from miko_assets.devtools.serving import free_port

REPO = Path(__file__).resolve().parents[2]
"""The checkout this package runs from: its `dagster.yaml` and `workspace.yaml` configure the rig."""


def project_env(workdir: Path, **extra: str) -> dict[str, str]:
    """Environment for a miko process whose instance and warehouse live in `workdir`."""
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(MIKO_WAREHOUSE=str(workdir / "warehouse.duckdb"), **extra)
    return env


def prepare_workdir(workdir: Path) -> None:
    """A folder laid out like the repository root: the instance and workspace config."""
    for name in ("dagster.yaml", "workspace.yaml"):
        shutil.copy(REPO / name, workdir / name)


@contextmanager
def dagster_dev(workdir: Path, env: dict[str, str], timeout_s: float = 180) -> Iterator["DagsterUI"]:
    port = free_port()
    log = open(workdir / "dagster_dev.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
        cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    ui = DagsterUI(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + timeout_s
        while not ui.ready():
            if proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited: {(workdir / 'dagster_dev.log').read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError("dagster dev did not come up")
            time.sleep(1)
        yield ui
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # A code server can outlive `dagster dev`, waiting on a run worker that died: end the group.
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


class DagsterUI:
    def __init__(self, url: str) -> None:
        self.url = url

    def ready(self) -> bool:
        try:
            data = self.graphql("{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }")
        except OSError:
            return False
        entries = data["workspaceOrError"].get("locationEntries", [])
        return bool(entries) and all(e["loadStatus"] == "LOADED" for e in entries)

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = json.loads(response.read())
        if payload.get("errors"):
            raise RuntimeError(payload["errors"])
        return payload["data"]

    def launch(self, job: str, partition: str, assets: list[str], location: str = "miko_assets") -> str:
        data = self.graphql(
            """
            mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
              __typename
              ... on LaunchRunSuccess { run { runId } }
              ... on PythonError { message }
              ... on RunConfigValidationInvalid { errors { message } }
              ... on InvalidSubsetError { message }
            } }
            """,
            {"p": {
                "selector": {
                    "repositoryLocationName": location, "repositoryName": "__repository__",
                    "jobName": job, "assetSelection": [{"path": [a]} for a in assets],
                },
                "runConfigData": {},
                "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
            }},
        )["launchRun"]
        if data["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(data)
        return data["run"]["runId"]

    def wait_for_run(self, run_id: str, timeout_s: float = 600) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.graphql(
                "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id}
            )["runOrError"]["status"]
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                return status
            time.sleep(1)
        raise TimeoutError(f"run {run_id} did not finish")


def launch_backfill(ui: DagsterUI, assets: list[str], partitions: list[str]) -> str:
    data = ui.graphql(
        """
        mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
          __typename
          ... on LaunchBackfillSuccess { backfillId }
          ... on PythonError { message }
        } }
        """,
        {"p": {"partitionNames": partitions, "assetSelection": [{"path": [a]} for a in assets]}},
    )["launchPartitionBackfill"]
    if data["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(data)
    return data["backfillId"]


def wait_for_backfill(ui: DagsterUI, backfill_id: str, timeout_s: float = 900) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = ui.graphql(
            "query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }",
            {"id": backfill_id},
        )["partitionBackfillOrError"]["status"]
        if status in ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"):
            return status
        time.sleep(2)
    raise TimeoutError(f"backfill {backfill_id} did not finish")


def reload_location(ui: DagsterUI, location: str = "miko_assets") -> None:
    data = ui.graphql(
        """
        mutation($l: String!) { reloadRepositoryLocation(repositoryLocationName: $l) {
          __typename ... on WorkspaceLocationEntry { locationOrLoadError { __typename } } ... on PythonError { message }
        } }
        """,
        {"l": location},
    )["reloadRepositoryLocation"]
    if data["__typename"] != "WorkspaceLocationEntry":
        raise RuntimeError(data)
    deadline = time.monotonic() + 120
    while not ui.ready():
        if time.monotonic() > deadline:
            raise TimeoutError("the code location did not reload")
        time.sleep(1)
