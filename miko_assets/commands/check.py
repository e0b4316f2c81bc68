"""`miko check`: can this host reach the warehouse, Dagster's instance storage and the run
launcher's broker? Run it on every host before a backfill: each problem is one line naming the
setting, and nothing is launched or paid for."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from miko_assets.warehouse.location import redact


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


def _instance_storage(args: argparse.Namespace) -> str:
    from miko_assets.instance import open_instance

    try:
        with open_instance() as instance:
            instance.get_runs(limit=1)
            return f"{type(instance.run_storage).__name__} ({instance.root_directory}/dagster.yaml, storage)"
    except Exception as exc:
        raise RuntimeError(f"dagster.yaml storage (DAGSTER_HOME and its DAGSTER_PG_* settings): {_one_line(exc)}") from None


def _run_launcher(args: argparse.Namespace) -> str:
    from miko_assets.instance import open_instance

    with open_instance() as instance:
        launcher = instance.run_launcher
        celery = getattr(launcher, "celery", None)
        if celery is None:
            return f"{type(launcher).__name__} (runs start on this host)"
        for setting, url, reach in (
            ("broker (CELERY_BROKER_URL)", launcher.broker, lambda: celery.connection_for_write().ensure_connection(max_retries=1, timeout=5)),
            ("backend (CELERY_RESULT_BACKEND)", launcher.backend, lambda: celery.backend.client.ping()),
        ):
            try:
                reach()
            except Exception as exc:
                raise RuntimeError(
                    f"dagster.yaml run_launcher {setting}: cannot reach {redact(str(url))}: {_one_line(exc)}"
                ) from None
        return f"{type(launcher).__name__}, broker {redact(str(launcher.broker))}"
