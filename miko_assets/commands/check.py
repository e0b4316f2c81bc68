"""`miko check`: can this host reach the warehouse, Dagster's instance storage and the run
launcher's broker and result backend? Run it on every host before a backfill: each problem is
one line naming the setting, within seconds, and nothing is launched or paid for."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from miko_assets.warehouse.location import redact

CONNECT_TIMEOUT_S = 5


def add_commands(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "check", help="check the warehouse, the Dagster instance storage and the run launcher's broker",
        description=__doc__,
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    checks: tuple[tuple[str, Callable[[argparse.Namespace], str]], ...] = (
        ("warehouse", _warehouse), ("instance storage", _instance_storage), ("run launcher", _run_launcher),
    )
    failed = 0
    for name, check in checks:
        try:
            print(f"ok   {name}: {check(args)}")
        except Exception as exc:  # every failure is reported, as one line, and the others still run
            failed += 1
            print(f"miko check: error: {_one_line(exc)}")
    return 2 if failed else 0


def _one_line(exc: BaseException) -> str:
    return " ".join(redact(str(exc)).split())[:500]


def _warehouse(args: argparse.Namespace) -> str:
    from miko_assets.commands.common import open_warehouse

    return open_warehouse(args).describe()


def _instance_config() -> tuple[Path, dict[str, Any]]:
    """The dagster.yaml `miko` and Dagster use here: `$DAGSTER_HOME/`, else `./` (see instance.py)."""
    import yaml

    folder = Path(os.environ["DAGSTER_HOME"]) if os.environ.get("DAGSTER_HOME") else Path.cwd()
    path = folder / "dagster.yaml"
    return path, (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def _setting(node: Any) -> tuple[str, str]:
    """(how the setting is named, its value) of a dagster.yaml value, plain or `{env: NAME}`."""
    if isinstance(node, dict) and "env" in node:
        return node["env"], os.environ.get(node["env"], "")
    return "", "" if node is None else str(node)


def _instance_storage(args: argparse.Namespace) -> str:
    path, config = _instance_config()
    postgres = (config.get("storage") or {}).get("postgres")
    if not postgres:
        return f"{path} (on this host only)"
    import psycopg2

    if "postgres_url" in postgres:
        name, url = _setting(postgres["postgres_url"])
        names, connect = name or "postgres_url", {"dsn": url}
    else:
        fields = {key: _setting(postgres["postgres_db"].get(key)) for key in ("hostname", "port", "username", "password", "db_name")}
        names = ", ".join(n or key for key, (n, _) in fields.items() if key != "password")
        connect = {"host": fields["hostname"][1], "port": fields["port"][1] or "5432", "user": fields["username"][1],
                   "password": fields["password"][1], "dbname": fields["db_name"][1]}
    try:
        psycopg2.connect(connect_timeout=CONNECT_TIMEOUT_S, **connect).close()
    except psycopg2.Error as exc:
        raise RuntimeError(f"{path} storage.postgres ({names}): cannot connect: {_one_line(exc)}") from None
    return f"Postgres ({names})"


def _run_launcher(args: argparse.Namespace) -> str:
    path, config = _instance_config()
    launcher = config.get("run_launcher") or {}
    if launcher.get("class") != "CeleryRunLauncher":
        return f"{launcher.get('class', 'DefaultRunLauncher')} (runs start on this host)"
    from kombu import Connection

    for key in ("broker", "backend"):
        name, url = _setting((launcher.get("config") or {}).get(key))
        where = f"{path} run_launcher.config.{key}" + (f" ({name})" if name else "")
        if not url:
            raise RuntimeError(f"{where} is not set")
        if key == "backend" and not url.startswith(("redis://", "rediss://")):
            continue  # other result backends are reached by the first task
        try:
            with Connection(url, connect_timeout=CONNECT_TIMEOUT_S) as connection:
                connection.ensure_connection(max_retries=1, timeout=CONNECT_TIMEOUT_S)
        except Exception as exc:
            raise RuntimeError(f"{where}: cannot reach {redact(url)}: {_one_line(exc)}") from None
    return f"CeleryRunLauncher (broker {redact(_setting(launcher['config']['broker'])[1])})"
