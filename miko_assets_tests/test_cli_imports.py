"""`miko` commands import only what they run: `--help` loads neither Dagster nor pandas, and
importing annotations does not build the asset definitions (whose settings it does not read)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from miko_assets import cli
from miko_assets.warehouse.warehouse import Warehouse
from miko_assets_tests.conftest import HEAVY_MODULES, miko_imports
from miko_assets_tests.paths import MIKO_RELEASE


def _command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [prefix]
    return [path for name, sub in subs[0].choices.items() for path in _command_paths(sub, (*prefix, name))]


def test_every_help_loads_no_dagster_pandas_duckdb_or_llm_sdk(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers()
    for module in cli.COMMAND_MODULES:
        module.add_commands(commands)
    paths = _command_paths(parser)
    assert ("ingest",) in paths and ("lineage",) in paths and ("annotate", "import") in paths

    codes, modules, printed = miko_imports([[*path, "--help"] for path in paths], tmp_path)
    assert codes == [0] * len(paths) and "usage: miko ingest" in printed
    assert not modules & {*HEAVY_MODULES, "pandas", "duckdb", "numpy", "pyarrow"}


def test_annotate_import_does_not_build_the_asset_definitions(tmp_path: Path) -> None:
    """A bad setting of an asset the import does not run (the annotation share) used to break it."""
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env["MIKO_ANNOTATION_SHARE"] = "a third"
    warehouse = tmp_path / "w.duckdb"
    codes, modules, printed = miko_imports(
        [["--warehouse", str(warehouse), "annotate", "import-miko-release", str(MIKO_RELEASE)]], tmp_path, env
    )
    assert codes == [0], printed
    assert Warehouse(warehouse).rows("SELECT count(*) > 0 FROM human_annotations") == [(True,)]
    assert "dagster" in modules  # the import is recorded in the instance, so the UI shows it
    assert not modules & {"miko_assets.definitions", "miko_assets.assets", "miko_assets.resources", "anthropic", "openai"}
