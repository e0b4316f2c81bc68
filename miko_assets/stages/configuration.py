"""A generation stage's configuration in words, as recorded in the warehouse.

A code version names a configuration by hashes (`intentions@v2:1a2b...|local/SmolLM2|p3c4d...`).
Every materialization records what its code version means (`stage_configs`): provider, model,
prompt version and sha, the generation parameters, and the environment variables that set
any of them. The code location's sensor records the configuration `dagster dev` loaded
(`code_location_configs`), so that `miko stale` judges staleness against what the UI shows,
whatever the shell's own environment says. Two records give the change in words.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import duckdb
import pandas as pd
from pydantic import BaseModel, ConfigDict

from miko_assets.distill.config import ImageSettings, stage_env_overrides
from miko_assets.stages.config_changes import describe_changes
from miko_assets.stages.versions import StageSpec
from miko_assets.clock import utc_now
from miko_assets.warehouse.warehouse import Warehouse


class ConfigRecord(BaseModel):
    """What one code version of a generation asset is made of."""

    model_config = ConfigDict(frozen=True)

    asset: str
    code_version: str
    provider: str
    model: str
    prompt_name: str
    prompt_version: str
    prompt_sha: str
    params: dict[str, Any]
    # How the stage sends images, when not the default (`512 px, detail low`).
    image: str | None = None
    env_overrides: dict[str, str] = {}

    def in_words(self) -> str:
        """`local/SmolLM2, prompt intentions v2 (sha 1a2b3c4d5e6f), temperature 0.7, max_tokens 700`."""
        params = ", ".join(f"{k} {v}" for k, v in self.params.items())
        image = f", images {self.image}" if self.image else ""
        return (f"{self.provider}/{self.model}, prompt {self.prompt_name} {self.prompt_version} "
                f"(sha {self.prompt_sha[:12]}), {params}{image}")

    def overrides_in_words(self) -> str:
        """`MIKO_INTENTIONS_TEMPERATURE=0.3`, or `none`."""
        return ", ".join(f"{k}={v}" for k, v in sorted(self.env_overrides.items())) or "none"


def config_record(spec: StageSpec, env: Mapping[str, str]) -> ConfigRecord:
    """The record of a stage spec resolved from `env`."""
    config = spec.config
    return ConfigRecord(
        asset=spec.asset,
        code_version=spec.code_version,
        provider=config.provider,
        model=config.model,
        prompt_name=config.prompt_name,
        prompt_version=config.prompt_version,
        prompt_sha=config.prompt().sha,
        params={k: v for k, v in config.params.model_dump().items() if v is not None},
        image=config.image.describe() if config.image != ImageSettings() else None,
        env_overrides=stage_env_overrides(spec.asset, env),
    )


def changes(old_code_version: str, old: ConfigRecord | None, new: ConfigRecord) -> list[str]:
    """What differs from an old configuration (its record, when there is one) to `new`, in words."""
    return describe_changes(old_code_version, old.model_dump() if old else None, new.code_version, new.model_dump())


# -- the warehouse side ---------------------------------------------------------------------

def record_configs(warehouse: Warehouse, records: Iterable[ConfigRecord]) -> None:
    """Remember what each code version means (the first record of a code version stays)."""
    frame = _config_frame(records)
    if not frame.empty:
        warehouse.insert_new("stage_configs", frame)


def record_code_location(warehouse: Warehouse, records: Iterable[ConfigRecord]) -> None:
    """The configuration the code location loaded, one per asset, replacing the previous one."""
    records = list(records)
    record_configs(warehouse, records)
    frame = _config_frame(records)
    if frame.empty:
        return

    # Delete then insert, not INSERT OR REPLACE: a DuckLake has no key to replace on.
    def replace(con: duckdb.DuckDBPyConnection) -> None:
        con.execute("DELETE FROM code_location_configs WHERE list_contains(?, asset)", [list(frame["asset"])])
        con.execute("INSERT INTO code_location_configs BY NAME SELECT * FROM loaded_configs")

    warehouse.write(replace, loaded_configs=frame)


def _config_frame(records: Iterable[ConfigRecord]) -> pd.DataFrame:
    rows = [
        {"asset": r.asset, "code_version": r.code_version, "config_json": r.model_dump_json(), "recorded_at": utc_now()}
        for r in records
    ]
    return pd.DataFrame(rows, columns=["asset", "code_version", "config_json", "recorded_at"])


def recorded_configs(warehouse: Warehouse, code_versions: Iterable[str]) -> dict[str, ConfigRecord]:
    """code version -> its record, for the code versions that have one."""
    wanted = sorted(set(code_versions))
    if not wanted:
        return {}
    rows = warehouse.rows("SELECT code_version, config_json FROM stage_configs WHERE list_contains(?, code_version)", [wanted])
    return {version: ConfigRecord.model_validate(json.loads(text)) for version, text in rows}


def code_location_configs(warehouse: Warehouse) -> dict[str, tuple[ConfigRecord, datetime]]:
    """asset -> (the configuration the code location loaded, when its sensor recorded it)."""
    rows = warehouse.rows("SELECT asset, config_json, recorded_at FROM code_location_configs")
    return {asset: (ConfigRecord.model_validate(json.loads(text)), at) for asset, text, at in rows}


class ActiveConfiguration(BaseModel):
    """The configuration staleness is judged against, and where it comes from."""

    records: dict[str, ConfigRecord]
    source: str
    # asset -> how this shell's own configuration differs from the code location's
    shell_differs: dict[str, list[str]] = {}


def active_configuration(warehouse: Warehouse, shell: Mapping[str, StageSpec], env: Mapping[str, str]) -> ActiveConfiguration:
    """The code location's recorded configuration when there is one, else the shell's (`shell`, `env`)."""
    own = {asset: config_record(spec, env) for asset, spec in shell.items()}
    loaded = code_location_configs(warehouse)
    if not loaded:
        return ActiveConfiguration(
            records=own, source="this shell's prompts folder and environment (no code location has recorded its configuration yet)"
        )
    newest = max(at for _, at in loaded.values())
    records = {asset: loaded[asset][0] if asset in loaded else record for asset, record in own.items()}
    differs = {
        asset: changes(records[asset].code_version, records[asset], record)
        for asset, record in own.items()
        if record.code_version != records[asset].code_version
    }
    return ActiveConfiguration(
        records=records,
        source=f"the configuration the code location (dagster dev) loaded, recorded at {newest:%Y-%m-%d %H:%M:%S} UTC",
        shell_differs=differs,
    )
