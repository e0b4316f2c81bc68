"""The prompt registry: every template the project has used, by sha."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import pandas as pd

from miko_assets.clock import utc_now
from miko_assets.warehouse.schema import PROMPT_REGISTRY
from miko_assets.warehouse.warehouse import Warehouse


class RegisteredPrompt(Protocol):
    """What the registry stores of a prompt template (`distill.prompts.PromptTemplate` is one)."""

    sha: str
    name: str
    version: str

    def model_dump_json(self) -> str: ...


def register_prompts(warehouse: Warehouse, prompts: Iterable[RegisteredPrompt]) -> int:
    """Store templates not yet registered; returns how many were new."""
    now = utc_now()
    rows = [(p.sha, p.name, p.version, p.model_dump_json(), now) for p in prompts]
    frame = pd.DataFrame(rows, columns=PROMPT_REGISTRY.column_names)
    return warehouse.insert_new(PROMPT_REGISTRY.name, frame)
