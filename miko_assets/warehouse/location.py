"""Where the warehouse lives: a DuckDB file (the default) or a DuckLake (catalog + data folder).

`MIKO_WAREHOUSE` is a file path, or `ducklake:<catalog>` where the catalog is
`postgres:<libpq connection string>` (several machines) or `sqlite:<file>` (several processes on
one machine). A DuckLake also needs `MIKO_WAREHOUSE_DATA`: the folder (or `s3://...` prefix) for
its Parquet files. A password belongs in `PGPASSWORD` or `~/.pgpass`, not in the setting; one
given there anyway is never shown: `describe()` and `redact()` blank it.
"""

from __future__ import annotations

import fcntl
import importlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where a connection is used: `miko <command> --help` needs no DuckDB
    import duckdb

WAREHOUSE_SETTING = "MIKO_WAREHOUSE"
DEFAULT_WAREHOUSE = "warehouse.duckdb"
DATA_PATH_SETTING = "MIKO_WAREHOUSE_DATA"
DUCKLAKE_PREFIX = "ducklake:"
CATALOG_KINDS = ("postgres", "sqlite")
# DuckDB extension (as LOADed) -> the package that ships it for this DuckDB version.
EXTENSION_PACKAGES = {"ducklake": "duckdb-extension-ducklake", "postgres": "duckdb-extension-postgres",
                      "sqlite": "duckdb-extension-sqlite"}
_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'\"]+)", re.IGNORECASE)
_URL_CREDENTIALS = re.compile(r"(://[^:/@\s]*:)[^@\s]+@")


class WarehouseConfigError(ValueError):
    """A warehouse setting that cannot work; the message is one line naming the setting."""


@dataclass(frozen=True)
class WarehouseLocation:
    """A DuckDB file (`catalog` is None) or a DuckLake (`catalog` and `data_path` set)."""

    path: Path | None = None
    catalog: str | None = None
    data_path: str | None = None

    @property
    def is_ducklake(self) -> bool:
        return self.catalog is not None

    @property
    def catalog_kind(self) -> str | None:
        return self.catalog.split(":", 1)[0] if self.catalog else None

    def describe(self) -> str:
        """What to show a person: the file, or the DuckLake without any password."""
        if self.path is not None:
            return str(self.path)
        return f"{DUCKLAKE_PREFIX}{redact(self.catalog or '')} (data {redact(self.data_path or '')})"


def redact(text: str) -> str:
    """`text` with libpq `password=...` values and `user:password@` URL credentials blanked."""
    return _URL_CREDENTIALS.sub(r"\1***@", _PASSWORD.sub(r"\1***", text))


def parse_location(value: str, data_path: str | None = None) -> WarehouseLocation:
    """A `MIKO_WAREHOUSE` value (and `MIKO_WAREHOUSE_DATA`) as a location; one-line errors."""
    if not value.startswith(DUCKLAKE_PREFIX):
        return WarehouseLocation(path=Path(value).resolve())
    catalog = value[len(DUCKLAKE_PREFIX):]
    kind, _, target = catalog.partition(":")
    if kind not in CATALOG_KINDS or not target.strip():
        raise WarehouseConfigError(
            f"{WAREHOUSE_SETTING}={redact(value)!r} is not a DuckLake URL: use "
            "'ducklake:postgres:dbname=... host=... user=...' or 'ducklake:sqlite:/path/catalog.sqlite'"
        )
    if not data_path:
        raise WarehouseConfigError(
            f"{DATA_PATH_SETTING} is not set: a DuckLake warehouse needs a folder (or s3:// prefix) for its data files"
        )
    if kind == "sqlite":
        catalog = f"sqlite:{Path(target).resolve()}"
    if "://" not in data_path:
        data_path = str(Path(data_path).resolve())
    return WarehouseLocation(catalog=catalog, data_path=data_path.rstrip("/") + "/")


def default_warehouse_path() -> str:
    """`MIKO_WAREHOUSE`, else `warehouse.duckdb` in the current directory, as an absolute path
    (a `ducklake:` setting as it is)."""
    value = os.environ.get(WAREHOUSE_SETTING, DEFAULT_WAREHOUSE)
    return value if value.startswith(DUCKLAKE_PREFIX) else str(Path(value).resolve())


# -- DuckDB extensions, from their PyPI packages only -------------------------------------------


def extension_directory() -> Path:
    """Where this user's DuckDB installs the packaged extensions (never a download)."""
    return Path(tempfile.gettempdir()) / f"miko-duckdb-extensions-{os.getuid()}"


def offline_config() -> dict[str, str | bool]:
    """DuckDB settings that keep it from fetching an extension from the network."""
    return {"autoinstall_known_extensions": False, "autoload_known_extensions": False,
            "extension_directory": str(extension_directory())}


def load_extension(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """INSTALL the extension file its PyPI package ships (once per user), then LOAD it."""
    import duckdb

    package = EXTENSION_PACKAGES[name]
    wanted = f"pip install '{package}=={duckdb.__version__}'"
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError:
        raise WarehouseConfigError(f"{WAREHOUSE_SETTING}: the DuckDB extension {name!r} is missing: {wanted}") from None
    shipped = Path(module.__file__).parent / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not shipped.exists():
        raise WarehouseConfigError(
            f"{WAREHOUSE_SETTING}: {package} does not match duckdb {duckdb.__version__}: {wanted}"
        )
    folder = extension_directory()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".install.lock", "w") as lock:  # two processes must not write one file at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        # A file path, not a value: INSTALL takes no parameters. The path is the package's own.
        con.execute(f"INSTALL '{quoted_literal(str(shipped))}'")
    con.execute(f"LOAD {name}")


def quoted_literal(text: str) -> str:
    """`text` for a SQL string literal, for the statements that take no bound parameters."""
    return text.replace("'", "''")


def attach_statement(location: WarehouseLocation, alias: str) -> str:
    """ATTACH takes no bound parameters: the operator's own setting goes in a quoted literal."""
    return (f"ATTACH '{quoted_literal(DUCKLAKE_PREFIX + (location.catalog or ''))}' AS {alias} "
            f"(DATA_PATH '{quoted_literal(location.data_path or '')}')")
