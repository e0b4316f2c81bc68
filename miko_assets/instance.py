"""The Dagster instance that `miko` commands use: the same one `dagster dev` shows."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dagster._core.instance.ref import InstanceRef


def open_instance() -> dg.DagsterInstance:
    """`$DAGSTER_HOME` when set; else the instance configured by `./dagster.yaml` (as `dagster dev`
    run from the repository root uses it), else a persistent `./.dagster_home`."""
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    cwd = Path.cwd()
    home = cwd / ".dagster_home"
    home.mkdir(exist_ok=True)
    config_dir = cwd if (cwd / "dagster.yaml").exists() else home
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home), config_dir=str(config_dir)))
