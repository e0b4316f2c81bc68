"""The prompt registry: every template the project has used, by sha."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

from miko_assets.distill.prompts import PromptTemplate
from miko_assets.warehouse.warehouse import Warehouse


def register_prompts(warehouse: Warehouse, prompts: Iterable[PromptTemplate]) -> int:
    """Store templates not yet registered; returns how many were new."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    rows = [(p.sha, p.name, p.version, p.model_dump_json(), now) for p in prompts]
    warehouse.ensure_schema()
    with warehouse.connect() as con:
        before = con.execute("SELECT count(*) FROM prompt_registry").fetchone()[0]
        con.executemany("INSERT OR IGNORE INTO prompt_registry VALUES (?, ?, ?, ?, ?)", rows)
        after = con.execute("SELECT count(*) FROM prompt_registry").fetchone()[0]
    return after - before
