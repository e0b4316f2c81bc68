"""Which partitions hold rows made by another configuration than the current one, and why."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from miko_assets.stages.configuration import ConfigRecord, changes, recorded_configs
from miko_assets.distill.stages import GENERATION_STAGES
from miko_assets.stages.versions import STAGE_UPSTREAM
from miko_assets.warehouse.schema import TABLES
from miko_assets.warehouse.warehouse import Warehouse


def stale_partitions(warehouse: Warehouse, table: str, current_code_version: str) -> dict[str, list[str]]:
    """batch -> the code versions found there, for every batch with a row of another code version."""
    table = TABLES[table].name  # only declared tables, never user input
    rows = warehouse.rows(
        f"""
        SELECT batch, list(DISTINCT code_version ORDER BY code_version)
        FROM {table}
        GROUP BY batch
        HAVING bool_or(code_version IS DISTINCT FROM ?)
        ORDER BY batch
        """,
        [current_code_version],
    )
    return {batch: versions for batch, versions in rows}


@dataclass(frozen=True)
class StalePartition:
    """A partition made (partly) by other configurations, and what changed since, in words."""

    batch: str
    made_by: tuple[str, ...]
    why: tuple[str, ...]


def stale_report(warehouse: Warehouse, current: ConfigRecord) -> list[StalePartition]:
    """The asset's stale partitions against `current`, each with its changes in words."""
    stale = stale_partitions(warehouse, current.asset, current.code_version)
    old_versions = {v for versions in stale.values() for v in versions if v and v != current.code_version}
    known = recorded_configs(warehouse, old_versions)
    report = []
    for batch, versions in stale.items():
        why: list[str] = []
        for version in versions:
            if version is None:
                why.append("rows without a code version")
            elif version != current.code_version:
                why += [w for w in changes(version, known.get(version), current) if w not in why]
        report.append(StalePartition(batch, tuple(str(v) for v in versions), tuple(why)))
    return report


def stale_markdown(current: ConfigRecord, report: list[StalePartition]) -> str:
    """The report as Markdown: the current configuration, then one line per stale partition."""
    lines = [f"**{current.asset}** now: {current.in_words()}; environment overrides: {current.overrides_in_words()}", ""]
    if not report:
        return "\n".join([*lines, "No stale partitions."])
    lines.append(f"{len(report)} stale partition(s):")
    lines += [f"- `{p.batch}`: {'; '.join(p.why)}" for p in report]
    return "\n".join(lines)


def backfill_plan(stale: Mapping[str, Iterable[str]], chosen: Iterable[str]) -> dict[str, list[str]]:
    """asset -> partitions to rebuild: the stale partitions of the chosen assets, and the same
    partitions of every generation asset downstream of them (their input is about to change)."""
    chosen = set(chosen)
    unknown = chosen - set(GENERATION_STAGES)
    if unknown:
        raise ValueError(f"unknown asset {', '.join(sorted(unknown))}: choose among {', '.join(GENERATION_STAGES)}")
    plan: dict[str, set[str]] = {}
    for asset in GENERATION_STAGES:  # upstream first
        partitions = set(stale.get(asset, ())) if asset in chosen else set()
        for upstream in STAGE_UPSTREAM[asset]:
            partitions |= plan.get(upstream, set())
        if partitions:
            plan[asset] = partitions
    return {asset: sorted(partitions) for asset, partitions in plan.items()}


def stale_backfill_plan(warehouse: Warehouse, current: Mapping[str, ConfigRecord], chosen: Iterable[str]) -> dict[str, list[str]]:
    """asset -> partitions a backfill of the stale partitions of `chosen` (and downstream) must rebuild."""
    chosen = list(chosen)
    backfill_plan({}, chosen)  # refuses unknown assets before any query
    stale = {asset: list(stale_partitions(warehouse, asset, current[asset].code_version)) for asset in chosen}
    return backfill_plan(stale, chosen)
