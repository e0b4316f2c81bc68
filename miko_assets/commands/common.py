"""What every `miko` command shares.

Command modules import only light modules at their top (names, defaults, argparse); each
command imports what it runs when it runs. So `miko <command> --help` answers at once, and a
setting that only one part of the project reads cannot break a command that does not use it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from miko_assets.env_values import env_number
from miko_assets.warehouse.location import DUCKLAKE_PREFIX, default_warehouse_path

if TYPE_CHECKING:
    from miko_assets.warehouse.warehouse import Warehouse

# How long a command waits for another process (a run, another command) to release the file.
LOCK_TIMEOUT_ENV = "MIKO_WAREHOUSE_LOCK_TIMEOUT_S"
DEFAULT_LOCK_TIMEOUT_S = 300.0


def warehouse_setting(args: argparse.Namespace) -> str:
    """`--warehouse`, else `$MIKO_WAREHOUSE`, else `./warehouse.duckdb` (a `ducklake:` URL as it is)."""
    return args.warehouse or default_warehouse_path()


def open_warehouse(args: argparse.Namespace, create: bool = False) -> Warehouse:
    """The warehouse, with its schema. A missing file is created only when `create` is set (and
    `main` removes it again if the command then fails, so a mistyped path leaves nothing)."""
    from miko_assets.warehouse.warehouse import Warehouse

    setting = warehouse_setting(args)
    timeout = env_number(os.environ, LOCK_TIMEOUT_ENV)
    lock_timeout_s = DEFAULT_LOCK_TIMEOUT_S if timeout is None else timeout
    if setting.startswith(DUCKLAKE_PREFIX):
        warehouse = Warehouse(setting, lock_timeout_s=lock_timeout_s)
        warehouse.ensure_schema()
        return warehouse
    path = Path(setting)
    if path.is_dir():
        raise ValueError(f"the warehouse {path} is a folder: pass --warehouse a .duckdb file (or a new path)")
    if not path.exists():
        if not create:
            raise LookupError(f"no warehouse at {path}: run `miko ingest` or `miko demo` first, or pass --warehouse")
        args.created_warehouse = path
    warehouse = Warehouse(path, lock_timeout_s=lock_timeout_s)
    try:
        warehouse.ensure_schema()
    except Exception as exc:
        if "not a valid DuckDB database file" in str(exc):
            raise ValueError(
                f"{path} is not a DuckDB warehouse: pass --warehouse a .duckdb file (or a new path)"
            ) from exc
        raise
    return warehouse


def forget_created_warehouse(args: argparse.Namespace) -> None:
    """Remove the warehouse file the failed command created (nothing is left of a mistyped path)."""
    path: Path | None = getattr(args, "created_warehouse", None)
    if path is not None:
        for leftover in (path, path.with_name(path.name + ".wal")):
            leftover.unlink(missing_ok=True)
