"""The prompt registry: every template the project has used, by sha."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

import pandas as pd

from miko_assets.distill.prompts import PromptTemplate
from miko_assets.warehouse.schema import PROMPT_REGISTRY
from miko_assets.warehouse.warehouse import Warehouse


def register_prompts(warehouse: Warehouse, prompts: Iterable[PromptTemplate]) -> int:
    """Store templates not yet registered; returns how many were new."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    rows = [(p.sha, p.name, p.version, p.model_dump_json(), now) for p in prompts]
    frame = pd.DataFrame(rows, columns=PROMPT_REGISTRY.column_names)
    return warehouse.insert_new(PROMPT_REGISTRY.name, frame)
