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

PROMPT_REGISTRY = Table(
    "prompt_registry",
    (
        ("prompt_sha", "VARCHAR"),
        ("prompt_name", "VARCHAR"),
        ("prompt_version", "VARCHAR"),
        ("template_json", "VARCHAR"),
        ("registered_at", "TIMESTAMP"),
    ),
    primary_key=("prompt_sha",),
)

CAPTIONS = Table(
    "captions",
    (
        ("batch", "VARCHAR"),
        ("post_id", "VARCHAR"),
        ("caption_id", "VARCHAR"),
        ("image_sha256", "VARCHAR"),
        # `caption` (a multimodal model's description), `offline_image_analysis` (detected
        # objects and OCR text, not a caption) or `none` (no usable image).
        ("description_kind", "VARCHAR"),
        ("description", "VARCHAR"),
    )
    + LINEAGE_COLUMNS,
    keeps_history=True,
    indexes=(("batch",), ("post_id",)),
)

KEY_INFO = Table(
    "key_info",
    (
        ("batch", "VARCHAR"),
        ("post_id", "VARCHAR"),
        ("key_info_id", "VARCHAR"),
        ("concept", "VARCHAR"),
        ("action", "VARCHAR"),
        ("object", "VARCHAR"),
        ("emotion", "VARCHAR"),
        ("keywords", "VARCHAR"),
    )
    + LINEAGE_COLUMNS,
    keeps_history=True,
    indexes=(("batch",), ("post_id",)),
)

INTENTIONS = Table(
    "intentions",
    (
        ("batch", "VARCHAR"),
        ("post_id", "VARCHAR"),
        ("intention_id", "VARCHAR"),
        ("relation", "VARCHAR"),
        ("relation_index", "INTEGER"),
        ("prefix", "VARCHAR"),
        ("completion", "VARCHAR"),
        ("full_text", "VARCHAR"),
        ("kept_prefix", "BOOLEAN"),
        ("caption_id", "VARCHAR"),
        ("key_info_id", "VARCHAR"),
    )
    + LINEAGE_COLUMNS,
    keeps_history=True,
    indexes=(("batch",), ("intention_id",), ("post_id",)),
)

# One row per LLM call, keyed by the request's content address. Only `ok` rows are cache hits;
# a failed row is replaced when the call is made again.
LLM_CALLS = Table(
    "llm_calls",
    (
        ("call_id", "VARCHAR"),
        ("provider", "VARCHAR"),
        ("model", "VARCHAR"),
        ("request_json", "VARCHAR"),
        ("response_text", "VARCHAR"),
        ("parsed_json", "VARCHAR"),
        ("status", "VARCHAR"),
        ("error", "VARCHAR"),
        ("finish_reason", "VARCHAR"),
        ("tokens_in", "INTEGER"),
        ("tokens_out", "INTEGER"),
        ("tokens_cached", "INTEGER"),
        ("cost_usd", "DOUBLE"),
        ("latency_ms", "DOUBLE"),
        ("attempts", "INTEGER"),
        ("provider_request_id", "VARCHAR"),
        ("dagster_run_id", "VARCHAR"),
        ("stage", "VARCHAR"),
        ("created_at", "TIMESTAMP"),
    ),
    primary_key=("call_id",),
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        INGESTED_POSTS, POSTS, REJECTED_POSTS, PROMPT_REGISTRY, CAPTIONS, KEY_INFO, INTENTIONS,
        LLM_CALLS,
    )
}


def register(table: Table) -> Table:
    """Declare a table from a stage module; returns it for use as a constant."""
    TABLES[table.name] = table
    return table
