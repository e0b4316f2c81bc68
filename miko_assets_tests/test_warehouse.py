"""The warehouse keeps partitions atomic, survives killed writers, shares the file lock and migrates."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from miko_assets.warehouse import schema
from miko_assets.warehouse import warehouse as warehouse_module
from miko_assets.warehouse.schema import LLM_CALLS
from miko_assets.warehouse.warehouse import Warehouse

REPO = Path(__file__).resolve().parents[1]


def _rejected(batch: str, n: int, reason: str = "r") -> pd.DataFrame:
    return pd.DataFrame(
        {"batch": [batch] * n, "row_key": [f"{batch}-{i}" for i in range(n)], "post_id": [f"p{i}" for i in range(n)],
         "rejected_part": ["post"] * n, "reason": [reason] * n}
    )


def _count(wh: Warehouse, batch: str) -> int:
    return wh.rows("SELECT count(*) FROM rejected_posts WHERE batch = ?", [batch])[0][0]


def test_replace_partition_replaces_only_its_batch(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb")
    wh.replace_partition("rejected_posts", "a-0000", _rejected("a-0000", 3))
    wh.replace_partition("rejected_posts", "b-0000", _rejected("b-0000", 2))
    wh.replace_partition("rejected_posts", "a-0000", _rejected("a-0000", 5, "new"))
    assert _count(wh, "a-0000") == 5
    assert _count(wh, "b-0000") == 2
    assert wh.rows("SELECT DISTINCT reason FROM rejected_posts WHERE batch = 'a-0000'") == [("new",)]


def test_failed_insert_keeps_previous_rows(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb")
    wh.replace_partition("rejected_posts", "a-0000", _rejected("a-0000", 3))
    bad_type = _rejected("a-0000", 4).assign(created_at="not a timestamp")
    with pytest.raises(duckdb.Error):
        wh.replace_partition("rejected_posts", "a-0000", bad_type)
    with pytest.raises(ValueError, match="not_a_column"):
        wh.replace_partition("rejected_posts", "a-0000", _rejected("a-0000", 4).assign(not_a_column=1))
    assert _count(wh, "a-0000") == 3


def test_killed_writer_leaves_previous_rows(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    wh = Warehouse(path)
    wh.replace_partition("rejected_posts", "a-0000", _rejected("a-0000", 3))
    started = tmp_path / "started"
    script = textwrap.dedent(
        f"""
        import time, pathlib
        import pandas as pd
        import miko_assets.warehouse.warehouse as w
        real_insert = w._insert_frame
        def stalled_insert(con, table, frame):
            real_insert(con, table, frame)
            pathlib.Path({str(started)!r}).write_text("x")
            time.sleep(600)
        w._insert_frame = stalled_insert
        frame = pd.DataFrame({{"batch": ["a-0000"] * 50, "row_key": [str(i) for i in range(50)]}})
        w.Warehouse({str(path)!r}).replace_partition("rejected_posts", "a-0000", frame)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert proc.poll() is None, "writer exited early"
            assert time.monotonic() < deadline, "writer never reached the insert"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert _count(Warehouse(path), "a-0000") == 3


def test_two_processes_write_at_once(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    Warehouse(path).ensure_schema()
    script = textwrap.dedent(
        """
        import sys
        import pandas as pd
        from miko_assets.warehouse.warehouse import Warehouse
        wh = Warehouse(sys.argv[1])
        name = sys.argv[2]
        for i in range(25):
            batch = f"{name}-{i:04d}"
            frame = pd.DataFrame({"batch": [batch] * 20, "row_key": [f"{batch}-{j}" for j in range(20)]})
            wh.replace_partition("rejected_posts", batch, frame)
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), name], cwd=REPO) for name in ("x", "y")]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    rows = Warehouse(path).rows("SELECT substr(batch, 1, 1), count(*) FROM rejected_posts GROUP BY 1 ORDER BY 1")
    assert rows == [("x", 500), ("y", 500)]


def test_adding_a_column_migrates_without_losing_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "w.duckdb"
    narrow = schema.Table("notes", (("batch", "VARCHAR"), ("body", "VARCHAR")))
    monkeypatch.setitem(schema.TABLES, "notes", narrow)
    wh = Warehouse(path)
    wh.append("notes", pd.DataFrame({"batch": ["a", "b"], "body": ["one", "two"]}))

    wider = schema.Table("notes", narrow.columns + (("score", "DOUBLE"),))
    monkeypatch.setitem(schema.TABLES, "notes", wider)
    migrated = Warehouse(path)
    migrated.append("notes", pd.DataFrame({"batch": ["c"], "body": ["three"], "score": [0.5]}))
    assert migrated.rows("SELECT batch, body, score FROM notes ORDER BY batch") == [
        ("a", "one", None), ("b", "two", None), ("c", "three", 0.5)
    ]


def test_history_keeps_superseded_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = schema.Table("gen", (("batch", "VARCHAR"), ("item", "VARCHAR"), ("call_id", "VARCHAR")), keeps_history=True)
    monkeypatch.setitem(schema.TABLES, "gen", table)
    wh = Warehouse(tmp_path / "w.duckdb")
    first = pd.DataFrame({"batch": ["a"] * 2, "item": ["i1", "i2"], "call_id": ["c1", "c2"]})
    wh.replace_partition("gen", "a", first, unchanged_key=("call_id",))
    # Same generation again: nothing is archived.
    wh.replace_partition("gen", "a", first, unchanged_key=("call_id",))
    assert wh.rows("SELECT count(*) FROM gen_history") == [(0,)]
    second = pd.DataFrame({"batch": ["a"] * 2, "item": ["i1", "i2"], "call_id": ["c1", "c3"]})
    wh.replace_partition("gen", "a", second, replaced_by_run="run-2", unchanged_key=("call_id",))
    assert wh.rows("SELECT item, call_id, superseded_by_run FROM gen_history") == [("i2", "c2", "run-2")]
    assert wh.rows("SELECT call_id FROM gen ORDER BY call_id") == [("c1",), ("c3",)]


def test_lock_timeout_is_a_clear_error(tmp_path: Path) -> None:
    from miko_assets.warehouse.warehouse import WarehouseLockTimeout

    path = tmp_path / "w.duckdb"
    Warehouse(path).ensure_schema()
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(path)!r}); print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(WarehouseLockTimeout, match="stayed locked"):
            Warehouse(path, lock_timeout_s=0.5).rows("SELECT 1")
    finally:
        holder.kill()
        holder.wait()


def test_history_stamps_superseded_at_in_utc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`superseded_at` comes from the one UTC clock, like every other stored time (not from the
    database's clock, whose TIMESTAMP follows the session's time zone)."""
    table = schema.Table("gen", (("batch", "VARCHAR"), ("item", "VARCHAR")), keeps_history=True)
    monkeypatch.setitem(schema.TABLES, "gen", table)
    stamp = datetime(2031, 5, 6, 7, 8, 9)
    monkeypatch.setattr(warehouse_module, "utc_now", lambda: stamp)
    wh = Warehouse(tmp_path / "w.duckdb")
    wh.replace_partition("gen", "a", pd.DataFrame({"batch": ["a"], "item": ["old"]}))
    wh.replace_partition("gen", "a", pd.DataFrame({"batch": ["a"], "item": ["new"]}), replaced_by_run="r2")
    assert wh.rows("SELECT item, superseded_at, superseded_by_run FROM gen_history") == [("old", stamp, "r2")]


def test_transaction_commits_or_rolls_back_the_whole_block(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb")
    rows = _rejected("a-0000", 2)
    with wh.transaction(incoming=rows) as con:
        con.execute("INSERT INTO rejected_posts BY NAME SELECT * FROM incoming")
    assert _count(wh, "a-0000") == 2
    with pytest.raises(RuntimeError, match="midway"):
        with wh.transaction(incoming=_rejected("b-0000", 3)) as con:
            con.execute("INSERT INTO rejected_posts BY NAME SELECT * FROM incoming")
            con.execute("DELETE FROM rejected_posts WHERE batch = 'a-0000'")
            raise RuntimeError("midway")
    assert (_count(wh, "a-0000"), _count(wh, "b-0000")) == (2, 0)


def test_the_warehouse_imports_no_domain_module() -> None:
    """The warehouse is the bottom layer: loading it (schema, writes, prompt registry) pulls in
    no stage, dataset, LLM, annotation or sarcasm code. (warehouse/lineage.py reads
    stages.config_changes since the version-id work landed; not covered here yet.)"""
    script = textwrap.dedent(
        """
        import sys
        import miko_assets.warehouse.prompts
        import miko_assets.warehouse.schema, miko_assets.warehouse.warehouse
        print(" ".join(sorted(m for m in sys.modules if m.startswith("miko_assets."))))
        """
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert loaded and all(m.startswith(("miko_assets.warehouse", "miko_assets.clock")) for m in loaded), loaded


def test_a_key_no_longer_declared_is_dropped_and_the_rows_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`llm_calls` of older files declared its key; their next `ensure_schema` rebuilds it without."""
    path = tmp_path / "w.duckdb"
    keyed = schema.Table("calls", (("call_id", "VARCHAR"), ("body", "VARCHAR")), primary_key=("call_id",))
    monkeypatch.setitem(schema.TABLES, "calls", keyed)
    Warehouse(path).append("calls", pd.DataFrame({"call_id": ["c1", "c2"], "body": ["one", "two"]}))
    constraints = "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'calls' AND constraint_type = 'PRIMARY KEY'"
    assert Warehouse(path).rows(constraints) == [(1,)]

    monkeypatch.setitem(schema.TABLES, "calls", dataclasses.replace(keyed, declare_key=False))
    migrated = Warehouse(path)
    migrated.ensure_schema()
    assert migrated.rows(constraints) == [(0,)]
    assert migrated.rows("SELECT call_id, body FROM calls ORDER BY call_id") == [("c1", "one"), ("c2", "two")]
    assert migrated.rows(f"SELECT count(*) FROM duckdb_constraints() WHERE table_name = '{LLM_CALLS.name}' "
                         "AND constraint_type = 'PRIMARY KEY'") == [(0,)]
