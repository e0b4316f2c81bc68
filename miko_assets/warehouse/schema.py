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
    # column -> SQL expression over the row that fills the column in rows that existed before
    # a migration added it (otherwise they get NULL).
    fill_on_add: tuple[tuple[str, str], ...] = ()
    # False: the primary key is kept unique by the code that writes the table, not declared (a
    # DuckDB file re-serialises a table's whole key index at every checkpoint, i.e. at every
    # write that closes the file, which grows with the table). Existing keys are dropped.
    declare_key: bool = True
    # The one row the table is created with (column -> SQL expression), inserted in the
    # transaction that creates the table, so processes creating it at once cannot both add it.
    created_with: tuple[tuple[str, str], ...] = ()

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
        # The folder `image_path` must stay inside (NULL for rows ingested before it was kept).
        ("image_root", "VARCHAR"),
        # Dataset, source id, occurrence and text: the same post under any split.
        ("content_key", "VARCHAR"),
    ),
    primary_key=("row_key",),
    indexes=(("batch",),),
)

# One row that every ingest updates in its transaction. On a DuckLake two transactions that only
# insert never conflict, two that update one row do: two ingests at once are serialised, and the
# later one is run again and finds what the other added.
INGEST_LEDGER = Table(
    "ingest_ledger",
    (("ingests", "BIGINT"), ("last_ingest_id", "VARCHAR"), ("last_ingested_at", "TIMESTAMP")),
    created_with=(("ingests", "0"),),
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
        ("image_root", "VARCHAR"),
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
        # JSON field -> llm_calls id, for a per-field prompt (one call per field).
        ("field_call_ids", "VARCHAR"),
    )
    + LINEAGE_COLUMNS,
    keeps_history=True,
    indexes=(("batch",), ("post_id",)),
)

# Rows made before version ids existed get one from their content and lineage (`old` marks them).
_LEGACY_VERSION_ID = (
    "intention_id || '.old' || substr(md5(concat_ws('|', code_version, input_hash, llm_call_id, status, "
    "completion, CAST(created_at AS VARCHAR), dagster_run_id)), 1, 8)"
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
        # `<intention_id>.<hash of what this version says and how it was made>`: one id per
        # version, current or history; found through the intention_id index.
        ("version_id", "VARCHAR"),
    )
    + LINEAGE_COLUMNS,
    keeps_history=True,
    # Only the id: partitions are read by zone maps, and every index costs time at each write.
    indexes=(("intention_id",),),
    fill_on_add=(("version_id", _LEGACY_VERSION_ID),),
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
        # The normalised base URL of an OpenAI-compatible server (part of the key), else NULL.
        ("endpoint", "VARCHAR"),
    ),
    primary_key=("call_id",),
    # The LLM layer writes it about once a second while calls run (`llm.cache`).
    declare_key=False,
)

# Provider batches (OpenAI Batch, Anthropic Message Batches), keyed by the provider's batch id.
# `status` is `pending` until the ended batch's answers are collected into `llm_calls`.
LLM_BATCHES = Table(
    "llm_batches",
    (
        ("batch_id", "VARCHAR"),
        ("provider", "VARCHAR"),
        ("status", "VARCHAR"),
        ("provider_status", "VARCHAR"),
        ("stage", "VARCHAR"),
        ("asset", "VARCHAR"),
        ("partition_key", "VARCHAR"),
        ("n_items", "INTEGER"),
        ("n_succeeded", "INTEGER"),
        ("n_failed", "INTEGER"),
        ("tokens_in", "BIGINT"),
        ("tokens_out", "BIGINT"),
        ("cost_usd", "DOUBLE"),
        ("error", "VARCHAR"),
        ("dagster_run_id", "VARCHAR"),
        ("created_at", "TIMESTAMP"),
        ("checked_at", "TIMESTAMP"),
        ("collected_at", "TIMESTAMP"),
    ),
    primary_key=("batch_id",),
)

# One row per request of a provider batch: its rendered request (images by sha) and, once
# collected, whether the batch answered it (`ok`) or why not.
LLM_BATCH_ITEMS = Table(
    "llm_batch_items",
    (
        ("batch_id", "VARCHAR"),
        ("call_id", "VARCHAR"),
        ("request_json", "VARCHAR"),
        ("status", "VARCHAR"),
        ("error", "VARCHAR"),
    ),
    primary_key=("batch_id", "call_id"),
    indexes=(("call_id",),),
)

# Spending caps shared across runs and processes: every LLM batch under a cap holds one lease on
# its budget. An open lease counts at what it was granted (the worst case of what it has spent
# and has in flight), a closed one at what it spent; a grant never takes their sum above the cap.
LLM_BUDGET_LEASES = Table(
    "llm_budget_leases",
    (
        ("lease_id", "VARCHAR"),
        ("budget_name", "VARCHAR"),
        ("cap_usd", "DOUBLE"),
        ("granted_usd", "DOUBLE"),
        ("spent_usd", "DOUBLE"),
        ("status", "VARCHAR"),
        ("dagster_run_id", "VARCHAR"),
        ("stage", "VARCHAR"),
        ("created_at", "TIMESTAMP"),
        ("closed_at", "TIMESTAMP"),
    ),
    primary_key=("lease_id",),
)

# One row per labelled post of a batch with its caption, key info and ten intentions (the
# sarcasm experiment's input, built by `miko_assets.sarcasm.dataset`).
SARCASM_DATASET = Table(
    "sarcasm_dataset",
    (
        ("batch", "VARCHAR"),
        ("post_id", "VARCHAR"),
        ("dataset", "VARCHAR"),
        ("split", "VARCHAR"),
        ("label", "INTEGER"),
        ("text", "VARCHAR"),
        ("caption", "VARCHAR"),
        ("caption_id", "VARCHAR"),
        ("key_info", "VARCHAR"),
        ("key_info_id", "VARCHAR"),
        # The intention text and id of each relation, in MIKO's relation order.
        ("intent_xWant", "VARCHAR"),
        ("intent_xWant_id", "VARCHAR"),
        ("intent_oEffect", "VARCHAR"),
        ("intent_oEffect_id", "VARCHAR"),
        ("intent_xAttr", "VARCHAR"),
        ("intent_xAttr_id", "VARCHAR"),
        ("intent_xIntent", "VARCHAR"),
        ("intent_xIntent_id", "VARCHAR"),
        ("intent_xReact", "VARCHAR"),
        ("intent_xReact_id", "VARCHAR"),
        ("intent_oReact", "VARCHAR"),
        ("intent_oReact_id", "VARCHAR"),
        ("intent_oWant", "VARCHAR"),
        ("intent_oWant_id", "VARCHAR"),
        ("intent_xEffect", "VARCHAR"),
        ("intent_xEffect_id", "VARCHAR"),
        ("intent_xNeed", "VARCHAR"),
        ("intent_xNeed_id", "VARCHAR"),
        ("intent_Open", "VARCHAR"),
        ("intent_Open_id", "VARCHAR"),
        ("n_intentions", "INTEGER"),
        ("has_intentions", "BOOLEAN"),
        # Where the post's intentions came from (comma-joined when a post mixes several).
        ("teacher_model", "VARCHAR"),
        ("teacher_prompt_version", "VARCHAR"),
        ("teacher_prompt_sha", "VARCHAR"),
        ("teacher_llm_call_id", "VARCHAR"),
        ("dagster_run_id", "VARCHAR"),
        ("created_at", "TIMESTAMP"),
    ),
    indexes=(("batch",),),
)

# One row per student variant and dataset of one sarcasm_student run; runs accumulate.
SARCASM_RESULTS = Table(
    "sarcasm_results",
    (
        ("run_id", "VARCHAR"),
        ("created_at", "TIMESTAMP"),
        ("batches", "VARCHAR"),
        ("dataset", "VARCHAR"),
        ("variant", "VARCHAR"),
        ("student", "VARCHAR"),
        ("teacher_model", "VARCHAR"),
        ("teacher_prompt_versions", "VARCHAR"),
        ("teacher_prompt_shas", "VARCHAR"),
        ("n_train", "INTEGER"),
        ("n_test", "INTEGER"),
        ("n_train_with_intentions", "INTEGER"),
        ("n_test_with_intentions", "INTEGER"),
        ("accuracy", "DOUBLE"),
        ("precision", "DOUBLE"),
        ("recall", "DOUBLE"),
        ("f1", "DOUBLE"),
        ("macro_f1", "DOUBLE"),
        ("macro_f1_diff", "DOUBLE"),
        ("ci_low", "DOUBLE"),
        ("ci_high", "DOUBLE"),
        ("n_resamples", "INTEGER"),
        ("fields", "VARCHAR"),
        ("empty_fields", "VARCHAR"),
        ("split_method", "VARCHAR"),
        ("seed", "INTEGER"),
    ),
    indexes=(("run_id",),),
)

# -- annotation and evaluation --------------------------------------------------------------

# The intentions sampled for annotation, with a snapshot of what annotators and judges see.
ANNOTATION_TASKS = Table(
    "annotation_tasks",
    (
        ("batch", "VARCHAR"),
        ("intention_id", "VARCHAR"),
        ("post_id", "VARCHAR"),
        ("relation", "VARCHAR"),
        ("intention", "VARCHAR"),
        ("post_text", "VARCHAR"),
        ("image_path", "VARCHAR"),
        ("caption_id", "VARCHAR"),
        ("caption", "VARCHAR"),
        ("intention_llm_call_id", "VARCHAR"),
        ("intention_code_version", "VARCHAR"),
        ("share", "DOUBLE"),
        ("seed", "BIGINT"),
        ("code_version", "VARCHAR"),
        ("dagster_run_id", "VARCHAR"),
        ("created_at", "TIMESTAMP"),
    ),
    indexes=(("batch",), ("intention_id",)),
)

# One person's judgement of one intention at one stage; importing it again adds nothing.
# intention_text_sha (here and in llm_annotations) names the text judged: ids outlive regenerations.
HUMAN_ANNOTATIONS = Table(
    "human_annotations",
    (
        ("annotation_key", "VARCHAR"),
        ("intention_id", "VARCHAR"),
        ("intention_text_sha", "VARCHAR"),
        ("post_id", "VARCHAR"),
        ("relation", "VARCHAR"),
        ("stage", "VARCHAR"),
        ("annotator", "VARCHAR"),
        ("label", "VARCHAR"),
        ("annotation_id", "VARCHAR"),
        ("source", "VARCHAR"),
        ("source_sha256", "VARCHAR"),
        ("updated_at", "VARCHAR"),
        ("import_id", "VARCHAR"),
        ("imported_at", "TIMESTAMP"),
    ),
    primary_key=("annotation_key",),
    indexes=(("intention_id",),),
)

# Every import of a human annotation file (Label Studio export or MIKO's release).
ANNOTATION_IMPORTS = Table(
    "annotation_imports",
    (
        ("import_id", "VARCHAR"),
        ("kind", "VARCHAR"),
        ("path", "VARCHAR"),
        ("source", "VARCHAR"),
        ("source_sha256", "VARCHAR"),
        ("rows_read", "INTEGER"),
        ("rows_added", "INTEGER"),
        ("skipped", "INTEGER"),
        ("dagster_run_id", "VARCHAR"),
        ("imported_at", "TIMESTAMP"),
    ),
    primary_key=("import_id",),
)

# One LLM judgement per sampled intention and stage (label: yes / no / unsure or 1-5).
LLM_ANNOTATIONS = Table(
    "llm_annotations",
    (
        ("batch", "VARCHAR"),
        ("intention_id", "VARCHAR"),
        ("intention_text_sha", "VARCHAR"),
        ("post_id", "VARCHAR"),
        ("relation", "VARCHAR"),
        ("stage", "VARCHAR"),
        ("label", "VARCHAR"),
        ("reason", "VARCHAR"),
    )
    + LINEAGE_COLUMNS,
    keeps_history=True,
    indexes=(("batch",), ("intention_id",)),
)

# The agreement report's tables; every materialization appends its rows under its run id.
_RUN_COLUMNS = (("dagster_run_id", "VARCHAR"), ("created_at", "TIMESTAMP"))
ANNOTATION_AGREEMENT_HUMANS = Table(
    "annotation_agreement_humans",
    (
        ("stage", "VARCHAR"),
        ("relation", "VARCHAR"),
        ("n_items", "INTEGER"),
        ("n_annotators", "INTEGER"),
        ("n_ratings", "INTEGER"),
        ("fleiss_kappa", "DOUBLE"),
        ("krippendorff_alpha", "DOUBLE"),
        ("alpha_level", "VARCHAR"),
    )
    + _RUN_COLUMNS,
)
ANNOTATION_AGREEMENT_JUDGES = Table(
    "annotation_agreement_judges",
    (
        ("stage", "VARCHAR"),
        ("judge_model", "VARCHAR"),
        ("judge_prompt_version", "VARCHAR"),
        ("relation", "VARCHAR"),
        ("n", "INTEGER"),
        ("n_failed", "INTEGER"),
        ("accuracy", "DOUBLE"),
        ("precision", "DOUBLE"),
        ("recall", "DOUBLE"),
        ("f1", "DOUBLE"),
        ("cohen_kappa", "DOUBLE"),
        ("tp", "INTEGER"),
        ("fp", "INTEGER"),
        ("fn", "INTEGER"),
        ("tn", "INTEGER"),
    )
    + _RUN_COLUMNS,
)
ANNOTATION_AGREEMENT_ACCEPT_RATES = Table(
    "annotation_agreement_accept_rates",
    (
        ("rater", "VARCHAR"),
        ("relation", "VARCHAR"),
        ("n", "INTEGER"),
        ("accepted", "INTEGER"),
        ("accept_rate", "DOUBLE"),
        ("miko_published_overall", "DOUBLE"),
    )
    + _RUN_COLUMNS,
)

# The intention benchmark: every row names its generator's configuration.
_GENERATOR_COLUMNS = (
    ("generator", "VARCHAR"),
    ("provider", "VARCHAR"),
    ("model", "VARCHAR"),
    ("prompt_name", "VARCHAR"),
    ("prompt_version", "VARCHAR"),
    ("prompt_sha", "VARCHAR"),
    ("params_hash", "VARCHAR"),
    ("code_version", "VARCHAR"),
)
_METRIC_COLUMNS = (
    ("bleu1", "DOUBLE"),
    ("bleu2", "DOUBLE"),
    ("rouge_l", "DOUBLE"),
    ("bertscore_p", "DOUBLE"),
    ("bertscore_r", "DOUBLE"),
    ("bertscore_f1", "DOUBLE"),
    # The BERTScore model (and layer) the bertscore_* values come from.
    ("bertscore_model", "VARCHAR"),
)
BENCHMARK_ITEMS = Table(
    "benchmark_items",
    _GENERATOR_COLUMNS
    + (
        ("post_id", "VARCHAR"),
        ("relation", "VARCHAR"),
        ("hypothesis", "VARCHAR"),
        ("references_json", "VARCHAR"),
        ("llm_call_id", "VARCHAR"),
        ("status", "VARCHAR"),
        ("error", "VARCHAR"),
    )
    + _METRIC_COLUMNS
    + _RUN_COLUMNS,
    indexes=(("dagster_run_id",),),
)
# Per generator and run: one row per relation and one `ALL` row (the macro average, ranked).
BENCHMARK_RESULTS = Table(
    "benchmark_results",
    _GENERATOR_COLUMNS
    + (("relation", "VARCHAR"), ("rank", "INTEGER"), ("n_items", "INTEGER"), ("n_failed", "INTEGER"))
    + _METRIC_COLUMNS
    + _RUN_COLUMNS,
    indexes=(("dagster_run_id",),),
)

# What each code version of a generation stage means (provider, model, prompt, parameters and
# the environment variables that set them), recorded by every materialization, so a stale
# partition can be explained in words; and the configuration the code location (the one
# `dagster dev` serves) loaded, recorded by its sensor, so `miko stale` agrees with the UI.
_CONFIG_COLUMNS = (
    ("asset", "VARCHAR"),
    ("code_version", "VARCHAR"),
    ("config_json", "VARCHAR"),
    ("recorded_at", "TIMESTAMP"),
)
STAGE_CONFIGS = Table("stage_configs", _CONFIG_COLUMNS, primary_key=("code_version",))
CODE_LOCATION_CONFIGS = Table("code_location_configs", _CONFIG_COLUMNS, primary_key=("asset",))

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        INGESTED_POSTS, INGEST_LEDGER, POSTS, REJECTED_POSTS, PROMPT_REGISTRY, CAPTIONS, KEY_INFO, INTENTIONS,
        LLM_CALLS, LLM_BATCHES, LLM_BATCH_ITEMS, LLM_BUDGET_LEASES, SARCASM_DATASET, SARCASM_RESULTS,
        ANNOTATION_TASKS, HUMAN_ANNOTATIONS, ANNOTATION_IMPORTS, LLM_ANNOTATIONS,
        ANNOTATION_AGREEMENT_HUMANS, ANNOTATION_AGREEMENT_JUDGES, ANNOTATION_AGREEMENT_ACCEPT_RATES,
        BENCHMARK_ITEMS, BENCHMARK_RESULTS, STAGE_CONFIGS, CODE_LOCATION_CONFIGS,
    )
}
