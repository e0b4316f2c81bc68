"""Where prompts, stage configuration (`stages.yaml`) and prices (`prices.yaml`) are read from.

The package ships them as data (`miko_assets/prompts`, which in the repository is a link to the
top-level `prompts/` that people edit). A project overrides them with its own folder: first
`$MIKO_PROMPTS_DIR`, then a `prompts/` holding a `stages.yaml` in the working directory, then
the packaged copy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

PROMPTS_DIR_ENV = "MIKO_PROMPTS_DIR"
PRICES_PATH_ENV = "MIKO_PRICES_PATH"
STAGES_FILE = "stages.yaml"
PRICES_FILE = "prices.yaml"
PACKAGED_PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"


def prompts_dir(env: Mapping[str, str] = os.environ, cwd: Path | None = None) -> Path:
    """`$MIKO_PROMPTS_DIR`, else `./prompts` when it has a `stages.yaml`, else the packaged prompts."""
    if env.get(PROMPTS_DIR_ENV):
        return Path(env[PROMPTS_DIR_ENV])
    project = (cwd or Path.cwd()) / "prompts"
    return project if (project / STAGES_FILE).is_file() else PACKAGED_PROMPTS_DIR


def prices_path(env: Mapping[str, str] = os.environ, cwd: Path | None = None) -> Path:
    """`$MIKO_PRICES_PATH`, else the prompts folder's `prices.yaml`, else the packaged one."""
    if env.get(PRICES_PATH_ENV):
        return Path(env[PRICES_PATH_ENV])
    project = prompts_dir(env, cwd) / PRICES_FILE
    return project if project.is_file() else PACKAGED_PROMPTS_DIR / PRICES_FILE
