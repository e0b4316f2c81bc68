"""Ingestion from the UI: a job whose config names a dataset file, and partition registration."""

import dagster as dg
from pydantic import Field
from sqlalchemy.exc import IntegrityError

from miko_assets.ingest.batches import DEFAULT_BATCH_SIZE, ingest_file, ingest_report, known_batches
from miko_assets.partitions import post_batches
from miko_assets.resources import WarehouseResource
from miko_assets.warehouse.warehouse import Warehouse


class IngestConfig(dg.Config):
    format: str = Field(description="mmsd, mmsd2, twitter2015, twitter2017, isarcasmeval, miko_release, jsonl or csv")
    path: str
    split: str | None = None
    images: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    second_copy: bool = Field(
        default=False, description="add posts already ingested under another split again, under this split"
    )


def register_batches(instance: dg.DagsterInstance, warehouse: Warehouse) -> list[str]:
    """Add every batch the warehouse knows to the `post_batches` partitions; returns the added ones.

    Another process (a second ingest) may add some of them at the same moment: then the
    instance refuses the duplicates and what is still missing is added again."""
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


@dg.op(description="Load a dataset file into new post_batches partitions (idempotent).")
def ingest_dataset(context: dg.OpExecutionContext, config: IngestConfig, warehouse: WarehouseResource) -> None:
    wh = warehouse.get()
    result = ingest_file(
        wh, config.format, config.path, split=config.split, images_dir=config.images,
        batch_size=config.batch_size, second_copy=config.second_copy,
    )
    register_batches(context.instance, wh)
    for line in ingest_report(result):
        context.log.info(line)
    context.log.info(f"new partitions: {', '.join(result.new_batches) or 'none'}")


@dg.job(description="Ingest a dataset file into post_batches partitions.")
def ingest_job() -> None:
    ingest_dataset()
