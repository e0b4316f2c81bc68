"""Ingestion from the UI: a job whose config names a dataset file."""

import dagster as dg
from pydantic import Field

from miko_assets.ingest.batches import ingest_file, ingest_report
from miko_assets.ingest.keys import DEFAULT_BATCH_SIZE
from miko_assets.partitions import register_batches
from miko_assets.resources import WarehouseResource


class IngestConfig(dg.Config):
    format: str = Field(description="mmsd, mmsd2, twitter2015, twitter2017, isarcasmeval, miko_release, jsonl or csv")
    path: str
    split: str | None = None
    images: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    second_copy: bool = Field(
        default=False, description="add posts already ingested under another split again, under this split"
    )


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
