"""The one partitioning of every per-batch asset, and adding the warehouse's batches to it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    from miko_assets.warehouse.warehouse import Warehouse

post_batches = dg.DynamicPartitionsDefinition(name="post_batches")


def register_batches(instance: dg.DagsterInstance, warehouse: Warehouse) -> list[str]:
    """Add every batch the warehouse knows to the `post_batches` partitions; returns the added ones.

    Another process (a second ingest) may add some of them at the same moment: then the
    instance refuses the duplicates and what is still missing is added again."""
    from sqlalchemy.exc import IntegrityError

    from miko_assets.ingest.batches import known_batches

    known = known_batches(warehouse)
    attempts = 5
    for attempt in range(attempts):
        existing = set(instance.get_dynamic_partitions(post_batches.name))
        missing = [b for b in known if b not in existing]
        if not missing:
            break
        try:
            instance.add_dynamic_partitions(post_batches.name, missing)
            break
        except IntegrityError:
            if attempt == attempts - 1:
                raise
    return missing
