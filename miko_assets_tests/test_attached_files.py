"""Warehouse files are attached to one in-memory DuckDB per process while in use, and released
for other processes (checkpointed, unlocked) when the last connection closes."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from miko_assets.warehouse.warehouse import Warehouse


def _in_another_process(script: str) -> str:
    """What `script` prints when another Python process runs it."""
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()


def _other_process_count(path: Path) -> str:
    """What another process reads from the file, or its error: it is refused while we hold it."""
    return _in_another_process(
        "import duckdb\n"
        f"try: print(duckdb.connect({str(path)!r}).execute('SELECT count(*) FROM miko.notes').fetchone()[0])\n"
        "except duckdb.IOException as exc: print('locked' if 'lock' in str(exc).lower() else exc)\n"
    )


def test_the_file_is_released_to_other_processes_when_the_last_connection_closes(tmp_path: Path) -> None:
    path = tmp_path / "it's a warehouse.duckdb"  # a quote in the name is part of the literal
    warehouse = Warehouse(path)
    warehouse.execute("CREATE TABLE notes (text VARCHAR)")
    with warehouse.connect() as outer:
        outer.execute("INSERT INTO notes VALUES ('one')")
        with warehouse.connect() as inner:  # the same attachment, not a second open
            inner.execute("INSERT INTO notes VALUES ('two')")
        assert _other_process_count(path) == "locked", "the outer connection still holds the file"
    assert not Path(f"{path}.wal").exists(), "closing the last connection checkpoints the file"
    assert _other_process_count(path) == "2"
    # And once the other process has let go, this one opens it again.
    assert warehouse.rows("SELECT count(*) FROM notes") == [(2,)]


def test_two_warehouse_files_are_open_at_once_in_one_process(tmp_path: Path) -> None:
    first, second = Warehouse(tmp_path / "a.duckdb"), Warehouse(tmp_path / "b.duckdb")
    for warehouse, name in ((first, "a"), (second, "b")):
        warehouse.execute("CREATE TABLE notes (text VARCHAR)")
        warehouse.execute("INSERT INTO notes VALUES (?)", [name])
    with first.connect() as a, second.connect() as b:
        assert a.execute("SELECT text FROM notes").fetchall() == [("a",)]
        assert b.execute("SELECT text FROM notes").fetchall() == [("b",)]


def test_threads_open_and_close_one_file_at_once(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path / "w.duckdb")
    warehouse.execute("CREATE TABLE notes (thread INTEGER, n INTEGER)")
    errors: list[BaseException] = []

    def write(thread: int) -> None:
        try:
            for n in range(25):
                warehouse.write(lambda con, n=n: con.execute("INSERT INTO notes VALUES (?, ?)", [thread, n]))
        except BaseException as exc:  # noqa: BLE001  (reported by the assertion below)
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert warehouse.rows("SELECT count(*), count(DISTINCT (thread, n)) FROM notes") == [(100, 100)]
    assert warehouse.path is not None and _other_process_count(warehouse.path) == "100"



def test_a_new_file_is_written_in_the_current_storage_format_and_an_older_one_keeps_its_own(
    tmp_path: Path,
) -> None:
    import duckdb

    from miko_assets.warehouse.attached_files import STORAGE_VERSION

    def storage_version(path: Path) -> str:
        return _in_another_process(
            "import duckdb; con = duckdb.connect()\n"
            f"con.execute(\"ATTACH '{path}' AS w (READ_ONLY)\")\n"
            "print(con.execute(\"SELECT tags['storage_version'] FROM duckdb_databases() WHERE database_name = 'w'\").fetchone()[0])\n"
        )

    new = Warehouse(tmp_path / "new.duckdb")
    new.ensure_schema()
    assert storage_version(new.path) == f"{STORAGE_VERSION}+"

    old_path = tmp_path / "old.duckdb"
    duckdb.connect(str(old_path)).close()  # DuckDB's default format, as files made before
    before = storage_version(old_path)
    assert before != f"{STORAGE_VERSION}+"
    old = Warehouse(old_path)
    old.ensure_schema()
    old.execute("CREATE TABLE notes (text VARCHAR)")
    assert storage_version(old_path) == before
    assert old.rows("SELECT count(*) FROM llm_calls") == [(0,)]
