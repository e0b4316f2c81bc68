"""Every failure a user can cause, through the real `miko` command: one line on stderr that says
what to do, exit code 2, no traceback, and nothing written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from miko_assets.commands.errors import explain
from miko_assets.warehouse.warehouse import Warehouse
from miko_assets.devtools.serving import free_port

MIKO = shutil.which("miko") or "miko"
# Each case starts the real command (a few seconds of imports on a busy machine).
slow = pytest.mark.slow


def miko(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "MIKO_WAREHOUSE")}
    return subprocess.run([MIKO, *args], cwd=cwd, env={**environment, **env}, capture_output=True, text=True,
                          timeout=300, check=False)


def refused(done: subprocess.CompletedProcess[str], command: str, *needles: str) -> str:
    """The one error line, checked: exit 2, nothing else on stderr, every needle in it."""
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"miko {command}: error: "), done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    return folder


@slow
def test_bad_data_files_are_refused_and_a_mistyped_warehouse_is_not_created(workdir: Path) -> None:
    (workdir / "posts").mkdir()
    refused(miko(workdir, "ingest", "jsonl", "posts", "--warehouse", "typo.duckdb"), "ingest", "posts", "check the path")
    refused(miko(workdir, "ingest", "jsonl", "missing.jsonl", "--warehouse", "typo.duckdb"), "ingest",
            "missing.jsonl", "check the path")
    (workdir / "broken.json").write_text('[\n {"image_id": "1", "text": "hi", "label": 0},\n {"image_id": \n')
    refused(miko(workdir, "--warehouse", "typo.duckdb", "ingest", "mmsd2", "broken.json"), "ingest",
            "broken.json", "line 4")
    assert listing(workdir) == {"posts", "broken.json"}


@slow
def test_a_warehouse_that_is_no_duckdb_file_is_refused_and_left_alone(workdir: Path) -> None:
    notes = workdir / "notes.txt"
    notes.write_text("not a database\n")
    refused(miko(workdir, "stale", "--warehouse", "notes.txt"), "stale", "not a DuckDB warehouse")
    assert notes.read_text() == "not a database\n"
    (workdir / "folder").mkdir()
    refused(miko(workdir, "lineage", "some-id", "--warehouse", "folder"), "lineage", "is a folder")
    refused(miko(workdir, "export", "--warehouse", "nowhere.duckdb"), "export", "no warehouse at", "miko ingest")
    assert listing(workdir) == {"notes.txt", "folder"}


@slow
def test_a_locked_warehouse_and_bad_environment_values_name_what_to_change(workdir: Path) -> None:
    path = workdir / "warehouse.duckdb"
    Warehouse(path).ensure_schema()
    holder = duckdb.connect(str(path))  # another process would hold it the same way
    try:
        refused(miko(workdir, "stale", MIKO_WAREHOUSE_LOCK_TIMEOUT_S="1"), "stale", "locked", "try again")
    finally:
        holder.close()
    refused(miko(workdir, "stale", MIKO_WAREHOUSE_LOCK_TIMEOUT_S="soon"), "stale", "MIKO_WAREHOUSE_LOCK_TIMEOUT_S")
    # The demo checks its configuration before it writes anything.
    empty = workdir / "empty"
    empty.mkdir()
    refused(miko(empty, "demo", MIKO_LLM_CONCURRENCY="many"), "demo", "MIKO_LLM_CONCURRENCY")
    refused(miko(empty, "demo", MIKO_OPENAI_RPM="-5"), "demo", "MIKO_OPENAI_RPM")
    assert listing(empty) == set()


@slow
def test_a_malformed_label_studio_export_names_the_file_and_line(workdir: Path) -> None:
    Warehouse(workdir / "warehouse.duckdb").ensure_schema()
    (workdir / "export.json").write_text(json.dumps([{"id": 1, "data": {}}], indent=1)[:-3])
    refused(miko(workdir, "annotate", "import", "export.json"), "annotate", "export.json", "line")
    assert not (workdir / ".dagster_home").exists()


def test_os_errors_read_as_one_line() -> None:
    assert explain(PermissionError(13, "Permission denied", "/data/posts.json")) == (
        "permission denied: /data/posts.json: give this user access to it, or use another path"
    )
    assert explain(RuntimeError("a bug")) is None  # keeps its traceback


@slow
def test_an_unreachable_provider_says_what_to_check(workdir: Path) -> None:
    warehouse = Warehouse(workdir / "warehouse.duckdb")
    warehouse.append("posts", pd.DataFrame({"batch": "p1", "post_id": ["t:0"], "text": ["Love Mondays"]}))
    closed = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    done = miko(workdir, "batch", "submit", "--stage", "intentions", "--batch", "p1",
                MIKO_INTENTIONS_PROVIDER="openai", MIKO_INTENTIONS_MODEL="gpt-4o-mini",
                MIKO_OPENAI_BASE_URL=closed, OPENAI_API_KEY="sk-test-not-a-key")
    line = refused(done, "batch", "MIKO_OPENAI_BASE_URL", "try again")
    assert "sk-test-not-a-key" not in line
    assert warehouse.rows("SELECT count(*) FROM llm_batches") == [(0,)]
