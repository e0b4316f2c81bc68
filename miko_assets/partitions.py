"""The one partitioning of every per-batch asset."""

import re

import dagster as dg

post_batches = dg.DynamicPartitionsDefinition(name="post_batches")

BATCH_KEY_PATTERN = re.compile(r"^[a-z0-9_.-]+$")
