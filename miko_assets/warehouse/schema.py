"""Every warehouse table, declared once; the warehouse creates and migrates them from here.

Adding a column here adds it to existing warehouses on the next `ensure_schema` without
touching their rows. Columns are never dropped or retyped by code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SCHEMA = "miko"


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]
    primary_key: tuple[str, ...] = ()
    # A `<name>_history` twin keeps the rows a partition replace supersedes.
    keeps_history: bool = False
    indexes: tuple[tuple[str, ...], ...] = field(default=())

    @property
    def column_names(self) -> list[str]:
        return [c for c, _ in self.columns]


LINEAGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("prompt_name", "VARCHAR"),
    ("prompt_version", "VARCHAR"),
    ("prompt_sha", "VARCHAR"),
    ("model", "VARCHAR"),
    ("provider", "VARCHAR"),
    ("params_hash", "VARCHAR"),
    ("input_hash", "VARCHAR"),
    ("llm_call_id", "VARCHAR"),
    ("code_version", "VARCHAR"),
    ("dagster_run_id", "VARCHAR"),
    ("created_at", "TIMESTAMP"),
    ("status", "VARCHAR"),
    ("error", "VARCHAR"),
)

INGESTED_POSTS = Table(
    "ingested_posts",
    (
        ("row_key", "VARCHAR"),
        ("post_id", "VARCHAR"),
        ("batch", "VARCHAR"),
        ("position", "INTEGER"),
        ("dataset", "VARCHAR"),
        ("split", "VARCHAR"),
        ("source_id", "VARCHAR"),
        ("text", "VARCHAR"),
        ("text_error", "VARCHAR"),
        ("image_path", "VARCHAR"),
        ("label", "INTEGER"),
        ("labels_json", "VARCHAR"),
        ("metadata_json", "VARCHAR"),
        ("source_path", "VARCHAR"),
        ("ingest_id", "VARCHAR"),
        ("ingested_at", "TIMESTAMP"),
    ),
    primary_key=("row_key",),
    indexes=(("batch",),),
)

POSTS = Table(
    "posts",
    (
        ("batch", "VARCHAR"),
        ("post_id", "VARCHAR"),
        ("dataset", "VARCHAR"),
        ("split", "VARCHAR"),
        ("source_id", "VARCHAR"),
        ("text", "VARCHAR"),
        ("text_original", "VARCHAR"),
        ("label", "INTEGER"),
        ("labels_json", "VARCHAR"),
        ("metadata_json", "VARCHAR"),
        ("image_path", "VARCHAR"),
        ("image_sha256", "VARCHAR"),
        ("image_width", "INTEGER"),
        ("image_height", "INTEGER"),
        ("image_format", "VARCHAR"),
        ("image_error", "VARCHAR"),
        ("dagster_run_id", "VARCHAR"),
        ("created_at", "TIMESTAMP"),
    ),
    indexes=(("batch",), ("post_id",)),
)

REJECTED_POSTS = Table(
    "rejected_posts",
    (
        ("batch", "VARCHAR"),
        ("row_key", "VARCHAR"),
        ("post_id", "VARCHAR"),
        ("rejected_part", "VARCHAR"),
        ("reason", "VARCHAR"),
        ("text_original", "VARCHAR"),
        ("image_path", "VARCHAR"),
        ("dagster_run_id", "VARCHAR"),
        ("created_at", "TIMESTAMP"),
    ),
    indexes=(("batch",),),
)

TABLES: dict[str, Table] = {t.name: t for t in (INGESTED_POSTS, POSTS, REJECTED_POSTS)}


def register(table: Table) -> Table:
    """Declare a table from a stage module; returns it for use as a constant."""
    TABLES[table.name] = table
    return table
