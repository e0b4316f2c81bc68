"""Refuse to train a student on a subset: every required partition of every stage must exist."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import BaseModel

# Past this many keys per stage the message gives a count, so a large backfill stays readable.
LISTED_PER_STAGE = 20


class PartitionsNotReady(RuntimeError):
    """Raised by `require_ready`; the message lists the missing partitions per stage."""


class Readiness(BaseModel):
    required: list[str]
    missing: dict[str, list[str]]
    message: str

    @property
    def ready(self) -> bool:
        """Something to train on, and all of it materialized in every stage."""
        return bool(self.required) and not self.missing


def check_readiness(
    required: Iterable[str],
    materialized: Mapping[str, Iterable[str]],
    consumer: str = "sarcasm_student",
) -> Readiness:
    """Which `required` partition keys are not materialized, per upstream stage.

    `materialized` maps each upstream stage (asset name) to the partition keys it has.
    """
    needed = sorted(set(required))
    missing: dict[str, list[str]] = {}
    for stage, keys in materialized.items():
        have = set(keys)
        if gaps := [k for k in needed if k not in have]:
            missing[stage] = gaps
    if not needed:
        message = f"{consumer} refuses to train: no partitions are selected, so there is nothing to train on."
    elif not missing:
        message = f"{consumer}: all {len(needed)} partitions are materialized in {', '.join(materialized)}."
    else:
        incomplete = len({k for gaps in missing.values() for k in gaps})
        lines = [
            (
                f"{consumer} refuses to train: {incomplete} of its {len(needed)} required partitions "
                "are not materialized in every upstream stage, and it does not train on a subset."
            )
        ]
        for stage, gaps in missing.items():
            shown = ", ".join(gaps[:LISTED_PER_STAGE])
            more = f" and {len(gaps) - LISTED_PER_STAGE} more" if len(gaps) > LISTED_PER_STAGE else ""
            lines.append(f"  {stage}: {len(gaps)} missing: {shown}{more}")
        lines.append("Materialize (backfill) these partitions first, then run it again.")
        message = "\n".join(lines)
    return Readiness(required=needed, missing=missing, message=message)


def require_ready(
    required: Iterable[str],
    materialized: Mapping[str, Iterable[str]],
    consumer: str = "sarcasm_student",
) -> Readiness:
    """`check_readiness`, raising `PartitionsNotReady` with its message when anything is missing."""
    readiness = check_readiness(required, materialized, consumer)
    if not readiness.ready:
        raise PartitionsNotReady(readiness.message)
    return readiness
