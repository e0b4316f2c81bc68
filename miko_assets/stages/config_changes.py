"""What changed between two configurations of a generation stage, in words.

Works on plain records (the JSON `stage_configs` stores), so `miko lineage` can explain a
replaced version without importing the stage machinery.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def describe_changes(old_code_version: str, old: Mapping[str, Any] | None, new_code_version: str, new: Mapping[str, Any] | None) -> list[str]:
    """`temperature 0.7 → 0.3`, `model local/a → openai/b`, `prompt intentions v1 (sha …) → v2 (sha …)`.

    Without both records (rows made before configurations were recorded) only what the code
    version strings show can be named; parameters then change by hash.
    """
    if old is None or new is None:
        return _from_code_versions(old_code_version, new_code_version)
    words = []
    if (old["provider"], old["model"]) != (new["provider"], new["model"]):
        words.append(f"model {old['provider']}/{old['model']} → {new['provider']}/{new['model']}")
    if (old["prompt_sha"], old["prompt_version"]) != (new["prompt_sha"], new["prompt_version"]):
        words.append(f"prompt {old['prompt_name']} {old['prompt_version']} (sha {old['prompt_sha'][:12]}) → "
                     f"{new['prompt_name']} {new['prompt_version']} (sha {new['prompt_sha'][:12]})")
    if old.get("image") != new.get("image"):
        words.append(f"images {old.get('image') or 'default'} → {new.get('image') or 'default'}")
    old_params, new_params = old["params"], new["params"]
    for name in sorted(set(old_params) | set(new_params)):
        before, after = old_params.get(name), new_params.get(name)
        if before != after:
            words.append(f"{name} {_shown(before)} → {_shown(after)}")
    return words or [f"code version {old_code_version} → {new_code_version}"]


def _from_code_versions(old: str, new: str) -> list[str]:
    """`prompt@version:sha|provider/model|phash[|ihash]`, compared part by part."""
    if old == new:
        return []
    old_parts, new_parts = old.split("|"), new.split("|")
    if not (3 <= len(old_parts) <= 4 and 3 <= len(new_parts) <= 4):
        return [f"code version {old} → {new}"]
    labels = ("prompt", "model", "parameters (by hash: the old values were not recorded)", "image settings (by hash)")
    old_parts += ["default"] * (4 - len(old_parts))
    new_parts += ["default"] * (4 - len(new_parts))
    return [f"{label} {a} → {b}" for label, a, b in zip(labels, old_parts, new_parts) if a != b]


def _shown(value: Any) -> str:
    return "unset" if value is None else str(value)
