"""The knowledge base at the paper's scale: write, lineage, statistics and export timings.

Builds a warehouse of `--posts` synthetic posts (default 137,287, MIKO's size) with captions,
key information, ten intentions per post (1,372,870 rows), their `llm_calls` rows (rendered
requests from the real prompt templates, raw answers), history rows for every tenth batch and
the prompt registry, all generated in DuckDB SQL, 10 batches at a time. Then it times
  1. replacing one 1,000-post partition of captions, key_info and intentions with a new
     generation through `Warehouse.replace_partition` (history archiving included),
  2. `intention_card` for `--lookups` random intention ids (median, p95), within one
     `Warehouse.session()` and with the file opened per card (as one `miko lineage` does),
  3. the `knowledge_base` asset's statistics (`relation_statistics` + `overall_statistics`),
  4. `export_knowledge_base` (Parquet, JSONL, TSV, data card),
and prints the warehouse file size.

    python benchmarks/kb_scale.py [--posts 137287] [--lookups 1000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pandas as pd

from miko_assets.clock import utc_now
from miko_assets.distill.caption import NO_CAPTION, build_caption_request
from miko_assets.distill.config import StageConfig, code_version, stage_config
from miko_assets.distill.intentions import build_intentions_request
from miko_assets.distill.key_info import MISSING_FIELD, KeyInfo, build_key_info_request
from miko_assets.distill.prompts import all_prompts
from miko_assets.distill.relations import RELATIONS
from miko_assets.ingest.keys import batch_key
from miko_assets.llm.costs import PriceTable
from miko_assets.llm.models import ImageInput
from miko_assets.stages.knowledge_base import (
    export_knowledge_base,
    overall_statistics,
    relation_statistics,
)
from miko_assets.warehouse.lineage import intention_card
from miko_assets.warehouse.prompts import register_prompts
from miko_assets.warehouse.schema import (
    CAPTIONS,
    INTENTIONS,
    KEY_INFO,
    LLM_CALLS,
    POSTS,
    SCHEMA,
)
from miko_assets.warehouse.warehouse import Warehouse, history_table

PAPER_POSTS = 137_287
BATCH_SIZE = 1_000
CHUNK_BATCHES = 10
FRAGMENTS = 4_096
DATASET, SPLIT = "mmsd2", "train"
FAILURE = "rate_limited: 429 after 5 attempts"
T = TypeVar("T")

# Shares, in thousandths: posts without an image, with an unreadable image, failed calls,
# relations an answer misses, key-info answers without an emotion; percent of kept prefixes.
RATES = {"no_image": 180, "broken_image": 15, "call_failed": 8, "missing": 12, "no_emotion": 80, "kept_prefix": 85}

SUBJECTS = ["my boss", "the train", "my cat", "this weather", "our team", "the wifi", "my phone", "the new update",
            "my neighbour", "the traffic", "mondays", "the coffee machine", "my diet", "the referee", "this queue",
            "the airline", "my landlord", "the printer", "my sister", "the government", "the bus", "my laptop"]
PREDICATES = ["is late again", "just broke down", "decided to take a nap", "is absolutely perfect today",
              "cancelled everything", "loves me so much", "works flawlessly as usual", "made my day",
              "ruined the weekend", "never disappoints", "is on fire tonight", "forgot my birthday",
              "crashed five minutes before the deadline", "showed up two hours late", "is the best thing ever",
              "charged me twice", "keeps surprising me", "won the game", "stole my seat", "ate my lunch"]
OPENERS = ["wow", "oh great", "yeah right", "so happy", "can't believe it", "love it", "thanks a lot",
           "just what i needed", "what a day", "finally", "lol", "seriously", "best news ever", "<user>"]
HASHTAGS = ["#sarcasm", "#blessed", "#mondaymotivation", "#fail", "#winning", "#not", "#life", "#love",
            "#travel", "#work", "#weekend", "#goals", "#foodie", "#nofilter", "#irony", "#happy"]
SCENES = ["a crowded train platform", "a cat sleeping on a laptop", "a rainy street at dusk", "a broken printer",
          "a plate of burnt toast", "a stadium full of fans", "an empty office", "a long airport queue",
          "a birthday cake with candles", "a traffic jam on a highway", "a smiling group of friends",
          "a screenshot of an error message", "a cup of coffee on a desk", "a dog in a raincoat"]
DETAILS = ["in warm light", "with text overlay reading 'great'", "seen from above", "in black and white",
           "with people looking annoyed", "next to a handwritten sign", "under grey skies", "in a cluttered room",
           "with a thumbs-up emoji", "at night", "with a price tag", "surrounded by balloons"]
NOUNS = ["train", "cat", "weather", "work", "coffee", "phone", "game", "queue", "birthday", "traffic", "update",
         "printer", "holiday", "food", "friends", "deadline", "exam", "concert", "rain", "flight"]
VERBS = ["waiting", "complaining", "celebrating", "travelling", "working", "cooking", "watching", "losing",
         "winning", "commuting", "studying", "shopping", "repairing", "sleeping"]
EMOTIONS = ["annoyed", "amused", "frustrated", "happy", "sarcastic", "proud", "tired", "excited", "disappointed",
            "grateful", "bored", "nostalgic"]
ACTIONS = ["share the joke with friends", "vent about the situation", "get some sympathy", "complain to the company",
           "laugh it off", "warn others", "find a better option", "celebrate the moment", "show off the result",
           "make people smile", "point out the irony", "ask for help", "plan the next trip", "rest for a while",
           "post an update later", "check the replies", "avoid the same mistake", "get a refund"]
FEELINGS = ["amused by", "annoyed about", "tired of", "proud of", "relieved about", "frustrated with",
            "sympathetic about", "curious about", "excited about", "embarrassed by", "grateful for"]
TRAITS = ["sarcastic", "patient", "fed up", "humorous", "optimistic", "frustrated", "playful", "honest",
          "sociable", "stressed", "ironic", "easily annoyed"]
QUALITIES = ["late", "broken", "new", "crowded", "expensive", "noisy", "cancelled", "delayed", "perfect", "awful",
             "endless", "surprising", "rainy", "cheap", "famous", "tiny", "huge", "unexpected", "free", "slow",
             "loud", "empty", "shiny", "boring", "stolen", "forgotten", "last-minute", "weekly", "local", "online"]
MODIFIERS = ["today", "again", "as soon as possible", "with their friends", "online", "before the weekend",
             "in the comments", "next time", "without complaining", "for a while", "at work", "after all",
             "with a laugh", "in private", "publicly", "one more time"]


@dataclass(frozen=True)
class Generator:
    """One stage configuration (provider, model, prompt version) that rows are generated by."""

    stage: str
    provider: str
    model: str
    prompt_version: str

    def config(self) -> StageConfig:
        prefix = f"MIKO_{self.stage.upper()}_"
        env = {f"{prefix}PROVIDER": self.provider, f"{prefix}MODEL": self.model,
               f"{prefix}PROMPT_VERSION": self.prompt_version}
        return stage_config(self.stage, env)

    def lineage(self) -> dict[str, str]:
        """The lineage columns this generator stamps on its rows."""
        config = self.config()
        prompt = config.prompt()
        return {"prompt_name": prompt.name, "prompt_version": prompt.version, "prompt_sha": prompt.sha,
                "model": config.model, "provider": config.provider, "params_hash": config.params.params_hash(),
                "code_version": code_version(config, prompt)}


# Generator ids used in the SQL below: 0 captions, 1 key info, 2-4 intentions.
GENERATORS = (
    Generator("captions", "openai", "gpt-4o-mini", "v1"),
    Generator("key_info", "openai", "gpt-4o-mini", "v2"),
    Generator("intentions", "openai", "gpt-3.5-turbo", "v1"),  # the paper's: last tenth, and history
    Generator("intentions", "openai", "gpt-4o-mini", "v2"),  # most batches
    Generator("intentions", "local", "SmolLM2-135M-Instruct.Q4_1", "v2"),  # a fifth of the batches
)
# The new generation that the write benchmark replaces a partition with.
REGENERATE = {
    "captions": Generator("captions", "anthropic", "claude-haiku-4-5", "v1"),
    "key_info": Generator("key_info", "anthropic", "claude-haiku-4-5", "v2"),
    "intentions": Generator("intentions", "anthropic", "claude-haiku-4-5", "v2"),
}
_SAME_GENERATION = {"captions": ("caption_id",), "key_info": ("key_info_id",), "intentions": ("intention_id", "llm_call_id")}


def request_template(gen: Generator) -> str:
    """The stage's rendered `request_json` with @@FIELD@@ markers where the post's values go."""
    config = gen.config()
    prompt = config.prompt()
    if gen.stage == "captions":
        request = build_caption_request(config, prompt, "@@TEXT@@", ImageInput(sha256="@@IMAGE@@", data_b64=""))
    elif gen.stage == "key_info":
        request = build_key_info_request(config, prompt, "@@TEXT@@", "@@CAPTION@@")
    else:
        info = KeyInfo(concept="@@CONCEPT@@", action="@@ACTION@@", object="@@OBJECT@@", emotion="@@EMOTION@@",
                       keywords="@@KEYWORDS@@")
        request = build_intentions_request(config, prompt, "@@TEXT@@", "@@CAPTION@@", info)
    return request.request_json()


def generators_frame() -> pd.DataFrame:
    prices = PriceTable.load()
    rows = []
    for index, gen in enumerate(GENERATORS):
        price = prices.price_for(gen.provider, gen.model)
        rows.append({"gen": index, "stage": gen.stage, **gen.lineage(), "template": request_template(gen),
                     "json_answer": gen.config().prompt().output == "json",
                     "price_in": price.input if price else 0.0, "price_out": price.output if price else 0.0})
    return pd.DataFrame(rows)


def fragments(rng: random.Random, parts: Callable[[random.Random], list[str]]) -> list[str]:
    return [" ".join(parts(rng)) for _ in range(FRAGMENTS)]


def vocabulary(seed: int) -> dict[str, pd.DataFrame]:
    """Phrase tables (i, f) the SQL joins on hashes; relation tails also keyed by relation_index."""
    rng = random.Random(seed)
    c = rng.choice
    tables = {
        "v_post_head": fragments(rng, lambda r: [c(OPENERS), c(SUBJECTS), c(PREDICATES)]),
        "v_post_tail": fragments(rng, lambda r: [c(["", c(OPENERS)]), c(HASHTAGS), c(["", c(HASHTAGS)])]),
        "v_scene": fragments(rng, lambda r: [c(SCENES), c(DETAILS)]),
        "v_detail": fragments(rng, lambda r: ["the image shows", c(SUBJECTS), c(["next to", "behind", "in front of"]),
                                              c(SCENES), c(DETAILS)]),
        "v_noun": fragments(rng, lambda r: [c(NOUNS)]),
        "v_verb": fragments(rng, lambda r: [c(VERBS), c(["", "at", "for", "with"]), c(NOUNS)]),
        "v_emotion": fragments(rng, lambda r: [c(EMOTIONS)]),
        "v_modifier": fragments(rng, lambda r: [c(MODIFIERS)]),
    }
    frames = {name: pd.DataFrame({"i": range(FRAGMENTS), "f": [" ".join(f.split()) for f in values]})
              for name, values in tables.items()}
    frames["v_object"] = pd.DataFrame({"i": range(FRAGMENTS), "f": fragments(
        rng, lambda r: [c(["the", "their", "that", "this"]), c(QUALITIES), c(NOUNS)])})
    tails = []
    for relation in RELATIONS:
        for i in range(FRAGMENTS):
            if relation.name in ("xReact", "oReact"):
                words = [c(FEELINGS)]
            elif relation.name == "xAttr":
                words = [c(TRAITS), "and", c(FEELINGS)]
            elif relation.name == "Open":
                words = ["the user wants to", c(ACTIONS), "about"]
            else:
                words = [c(ACTIONS), "about"]
            tails.append({"relation_index": relation.number, "i": i, "f": " ".join(words)})
    frames["v_tail"] = pd.DataFrame(tails)
    frames["relations"] = pd.DataFrame([{"relation": r.name, "relation_index": r.number, "prefix": r.prefix}
                                        for r in RELATIONS])
    return frames


def batches_frame(n_batches: int, seed: int) -> pd.DataFrame:
    """One row per batch: its generators, Dagster run ids and times (history runs come first)."""
    rng = random.Random(seed)
    start = datetime(2025, 3, 1)
    rows = []
    for b in range(n_batches):
        current = 3 if b * 10 < n_batches * 7 else 4 if b * 10 < n_batches * 9 else 2
        history = (3 if current == 2 else 2) if b % 10 == 3 else None
        at = start + timedelta(hours=b)
        rows.append({
            "batch_no": b, "batch": batch_key(f"{DATASET}-{SPLIT}", b), "int_gen": current, "hist_gen": history,
            **{f"{stage}_run": str(uuid.UUID(int=rng.getrandbits(128))) for stage in ("posts", "caption", "key_info", "int", "hist")},
            "posts_at": at, "caption_at": at + timedelta(minutes=10), "key_info_at": at + timedelta(minutes=20),
            "hist_at": at + timedelta(minutes=30),
            "int_at": at + (timedelta(days=30) if history is not None else timedelta(minutes=30)),
        })
    return pd.DataFrame(rows)


_POSTS_SQL = """
CREATE OR REPLACE TEMP TABLE c_posts AS
WITH base AS (
    SELECT p.n, b.batch_no, b.batch, b.posts_run, b.posts_at,
           CAST($id_base + p.n AS VARCHAR) AS source_id,
           trim(h.f || ' ' || t.f) AS text,
           rnd(p.n, 11) % 1000 < $no_image AS no_image,
           rnd(p.n, 12) % 1000 < $broken_image AS broken_image
    FROM range($first, $stop) p(n)
    JOIN batches b ON b.batch_no = p.n // $batch_size
    JOIN v_post_head h ON h.i = rnd(p.n, 1) % $fragments
    JOIN v_post_tail t ON t.i = rnd(p.n, 2) % $fragments
)
SELECT n, batch_no, batch, $dataset || ':' || source_id AS post_id, $dataset AS dataset, $split AS split, source_id,
       text, text AS text_original, CAST(rnd(n, 13) % 2 AS INTEGER) AS label,
       '{"label": ' || CAST(rnd(n, 13) % 2 AS VARCHAR) || '}' AS labels_json, '{}' AS metadata_json,
       CASE WHEN NOT no_image THEN $image_root || source_id || '.jpg' END AS image_path,
       CASE WHEN NOT no_image AND NOT broken_image THEN sha256(source_id) END AS image_sha256,
       CASE WHEN NOT no_image AND NOT broken_image THEN CAST(320 + rnd(n, 14) % 1600 AS INTEGER) END AS image_width,
       CASE WHEN NOT no_image AND NOT broken_image THEN CAST(240 + rnd(n, 15) % 1200 AS INTEGER) END AS image_height,
       CASE WHEN NOT no_image AND NOT broken_image THEN 'JPEG' END AS image_format,
       CASE WHEN NOT no_image AND broken_image THEN 'cannot identify image file: ' || $image_root || source_id || '.jpg' END AS image_error,
       posts_run AS dagster_run_id, posts_at AS created_at
FROM base
"""

# Every stage table below carries the llm_calls columns of its calls (`call_*`, request_json,
# response_text) next to its own rows.
_CAPTIONS_SQL = """
CREATE OR REPLACE TEMP TABLE c_captions AS
WITH base AS (
    SELECT p.n, p.batch, p.post_id, p.image_sha256, p.image_error,
           b.caption_run AS dagster_run_id, b.caption_at AS created_at,
           g.stage, g.prompt_name, g.prompt_version, g.prompt_sha, g.model, g.provider, g.params_hash, g.code_version,
           g.price_in, g.price_out,
           rnd(p.n, 21) % 1000 < $call_failed AS call_failed,
           CASE WHEN p.image_sha256 IS NOT NULL
                THEN replace(replace(g.template, '@@TEXT@@', p.text), '@@IMAGE@@', p.image_sha256) END AS request_json,
           s.f || ', ' || d.f AS answer,
           substr(sha256(p.text || coalesce(p.image_sha256, '')), 1, 16) AS input_hash
    FROM c_posts p
    JOIN batches b USING (batch_no)
    JOIN generators g ON g.gen = 0
    JOIN v_scene s ON s.i = rnd(p.n, 22) % $fragments
    JOIN v_detail d ON d.i = rnd(p.n, 23) % $fragments
)
SELECT *, sha256(request_json) AS call_id, call_id AS llm_call_id,
       CASE WHEN request_json IS NULL THEN 'none' ELSE 'caption' END AS description_kind,
       CASE WHEN request_json IS NULL THEN 'no_image' WHEN call_failed THEN 'failed' ELSE 'ok' END AS status,
       CASE WHEN request_json IS NULL THEN coalesce(image_error, 'the post has no image')
            WHEN call_failed THEN $failure END AS error,
       CASE WHEN status = 'ok' THEN 'A photo of ' || answer || '.' END AS description,
       description AS response_text,
       substr(sha256(post_id || code_version || input_hash || coalesce(description, '') || coalesce(error, '')), 1, 16)
           AS caption_id
FROM base
"""

_KEY_INFO_SQL = """
CREATE OR REPLACE TEMP TABLE c_key_info AS
WITH base AS (
    SELECT p.n, p.batch, p.post_id, p.text, c.description AS caption,
           b.key_info_run AS dagster_run_id, b.key_info_at AS created_at,
           g.stage, g.prompt_name, g.prompt_version, g.prompt_sha, g.model, g.provider, g.params_hash, g.code_version,
           g.price_in, g.price_out,
           rnd(p.n, 31) % 1000 < $call_failed AS call_failed,
           replace(replace(g.template, '@@TEXT@@', p.text), '@@CAPTION@@', coalesce(c.description, $no_caption))
               AS request_json,
           n1.f AS concept_value, v.f AS action_value, n2.f AS object_value,
           CASE WHEN rnd(p.n, 32) % 1000 >= $no_emotion THEN e.f END AS emotion_value,
           n1.f || ', ' || n2.f || ', ' || e.f AS keywords_value,
           substr(sha256(p.text || coalesce(c.description, '')), 1, 16) AS input_hash
    FROM c_posts p
    JOIN c_captions c USING (n)
    JOIN batches b ON b.batch_no = p.batch_no
    JOIN generators g ON g.gen = 1
    JOIN v_noun n1 ON n1.i = rnd(p.n, 33) % $fragments
    JOIN v_noun n2 ON n2.i = rnd(p.n, 34) % $fragments
    JOIN v_verb v ON v.i = rnd(p.n, 35) % $fragments
    JOIN v_emotion e ON e.i = rnd(p.n, 36) % $fragments
)
SELECT *, sha256(request_json) AS call_id, call_id AS llm_call_id,
       CASE WHEN call_failed THEN 'failed' ELSE 'ok' END AS status,
       CASE WHEN call_failed THEN $failure END AS error,
       CASE WHEN NOT call_failed THEN concept_value END AS concept,
       CASE WHEN NOT call_failed THEN action_value END AS action,
       CASE WHEN NOT call_failed THEN object_value END AS object,
       CASE WHEN NOT call_failed THEN emotion_value END AS emotion,
       CASE WHEN NOT call_failed THEN keywords_value END AS keywords,
       CASE WHEN NOT call_failed THEN
           '{"concept": "' || concept || '", "action": "' || action || '", "object": "' || object
           || '", "emotion": "' || coalesce(emotion, $missing_field) || '", "keywords": "' || keywords || '"}'
       END AS response_text,
       substr(sha256(post_id || code_version || input_hash || call_id), 1, 16) AS key_info_id
FROM base
"""

# One intentions call per post and generation (the current one, and the superseded one of
# batches with history).
_INTENTION_CALLS_SQL = """
CREATE OR REPLACE TEMP TABLE c_intention_calls AS
WITH versions AS (
    SELECT batch_no, int_gen AS gen, int_run AS dagster_run_id, int_at AS created_at, false AS is_history,
           NULL::TIMESTAMP AS superseded_at, NULL::VARCHAR AS superseded_by_run
    FROM batches
    UNION ALL
    SELECT batch_no, hist_gen, hist_run, hist_at, true, int_at, int_run FROM batches WHERE hist_gen IS NOT NULL
), base AS (
SELECT p.n, p.batch, p.post_id, v.gen, v.dagster_run_id, v.created_at, v.is_history, v.superseded_at, v.superseded_by_run,
       g.stage, g.prompt_name, g.prompt_version, g.prompt_sha, g.model, g.provider, g.params_hash, g.code_version,
       g.price_in, g.price_out, g.json_answer,
       CASE WHEN c.status = 'ok' THEN c.caption_id END AS caption_id,
       CASE WHEN k.status = 'ok' THEN k.key_info_id END AS key_info_id,
       rnd(p.n * 8 + v.gen, 41) % 1000 < $call_failed AS call_failed,
       replace(replace(replace(replace(replace(replace(replace(g.template,
           '@@TEXT@@', p.text), '@@CAPTION@@', coalesce(c.description, $no_caption)),
           '@@CONCEPT@@', coalesce(k.concept, $missing_field)), '@@ACTION@@', coalesce(k.action, $missing_field)),
           '@@OBJECT@@', coalesce(k.object, $missing_field)), '@@EMOTION@@', coalesce(k.emotion, $missing_field)),
           '@@KEYWORDS@@', coalesce(k.keywords, $missing_field)) AS request_json,
       substr(sha256(p.text || coalesce(c.description, '') || coalesce(k.response_text, '')), 1, 16) AS input_hash
FROM c_posts p
JOIN c_captions c USING (n)
JOIN c_key_info k USING (n)
JOIN versions v ON v.batch_no = p.batch_no
JOIN generators g ON g.gen = v.gen
)
SELECT *, sha256(request_json) AS call_id FROM base
"""

_INTENTIONS_SQL = """
CREATE OR REPLACE TEMP TABLE c_intentions AS
SELECT c.* EXCLUDE (request_json, call_id), c.call_id AS llm_call_id, r.relation, r.relation_index, r.prefix,
       CASE WHEN c.call_failed THEN 'failed'
            WHEN rnd((c.n * 8 + c.gen) * 16 + r.relation_index, 51) % 1000 < $missing THEN 'missing' ELSE 'ok' END AS status,
       CASE WHEN status = 'ok' THEN t.f || ' ' || o.f || ' ' || m.f END AS completion,
       CASE WHEN status = 'ok' THEN r.prefix || ' ' || completion END AS full_text,
       CASE WHEN status = 'ok' THEN rnd((c.n * 8 + c.gen) * 16 + r.relation_index, 52) % 100 < $kept_prefix END AS kept_prefix,
       CASE status WHEN 'failed' THEN $failure
                   WHEN 'missing' THEN 'the answer has no ' || r.relation || ' intention (missing)' END AS error,
       substr(sha256('["' || c.post_id || '","' || r.relation || '"]'), 1, 16) AS intention_id
FROM c_intention_calls c
CROSS JOIN relations r
JOIN v_tail t ON t.relation_index = r.relation_index AND t.i = rnd((c.n * 8 + c.gen) * 16 + r.relation_index, 53) % $fragments
JOIN v_object o ON o.i = rnd((c.n * 8 + c.gen) * 16 + r.relation_index, 54) % $fragments
JOIN v_modifier m ON m.i = rnd((c.n * 8 + c.gen) * 16 + r.relation_index, 55) % $fragments
"""

# The raw answers: one JSON object (v2 prompts) or the paper's `IntentionN:` lines (v1).
_ANSWERS_SQL = """
CREATE OR REPLACE TEMP TABLE c_answers AS
SELECT llm_call_id AS call_id,
       CASE WHEN any_value(json_answer)
            THEN '{' || string_agg('"' || relation || '": "' || completion || '"', ', ' ORDER BY relation_index) || '}'
            ELSE string_agg('Intention' || relation_index || ': ' || CASE WHEN kept_prefix THEN full_text ELSE completion END,
                            chr(10) ORDER BY relation_index)
       END AS response_text
FROM c_intentions WHERE status = 'ok'
GROUP BY llm_call_id
"""

_CALL_COLUMNS = """
    call_id, provider, model, request_json, response_text,
    CASE WHEN call_failed THEN 'failed' ELSE 'ok' END AS status,
    CASE WHEN call_failed THEN $failure END AS error,
    CASE WHEN call_failed THEN NULL ELSE 'stop' END AS finish_reason,
    CAST(ceil(len(request_json) / 4) AS INTEGER) AS tokens_in,
    CAST(ceil(coalesce(len(response_text), 0) / 4) AS INTEGER) AS tokens_out,
    CAST(CASE WHEN hash(call_id) % 4 = 0 THEN 256 ELSE 0 END AS INTEGER) AS tokens_cached,
    (tokens_in * price_in + tokens_out * price_out) / 1e6 AS cost_usd,
    CAST(300 + hash(call_id) % 4000 AS DOUBLE) AS latency_ms,
    CASE WHEN call_failed THEN 5 ELSE 1 END AS attempts,
    CASE WHEN provider <> 'local' AND NOT call_failed THEN 'req_' || substr(call_id, 1, 24) END AS provider_request_id,
    dagster_run_id, stage, created_at
"""


def _copy_sql(table: str, source: str, columns: list[str], where: str = "true") -> str:
    names = ", ".join(columns)
    return f"INSERT INTO {table} ({names}) SELECT {names} FROM {source} WHERE {where}"


def _generate_chunk(con: duckdb.DuckDBPyConnection, first: int, stop: int, params: dict[str, Any]) -> None:
    """Posts first..stop-1 with all their derived rows."""
    chunk = {**params, "first": first, "stop": stop}

    def run(sql: str) -> None:
        con.execute(sql, {name: chunk[name] for name in set(re.findall(r"\$(\w+)", sql))})

    for sql in (_POSTS_SQL, _CAPTIONS_SQL, _KEY_INFO_SQL, _INTENTION_CALLS_SQL, _INTENTIONS_SQL, _ANSWERS_SQL):
        run(sql)
    history = history_table(INTENTIONS)
    run(_copy_sql(POSTS.name, "c_posts", POSTS.column_names))
    run(_copy_sql(CAPTIONS.name, "c_captions", CAPTIONS.column_names))
    run(_copy_sql(KEY_INFO.name, "c_key_info", KEY_INFO.column_names))
    run(_copy_sql(INTENTIONS.name, "c_intentions", INTENTIONS.column_names, "NOT is_history"))
    run(_copy_sql(history.name, "c_intentions", history.column_names, "is_history"))
    for source in ("c_captions", "c_key_info"):
        run(f"INSERT OR IGNORE INTO {LLM_CALLS.name} BY NAME SELECT {_CALL_COLUMNS} FROM {source} "
            "WHERE request_json IS NOT NULL")
    run(f"INSERT OR IGNORE INTO {LLM_CALLS.name} BY NAME SELECT {_CALL_COLUMNS} "
        "FROM c_intention_calls LEFT JOIN c_answers USING (call_id)")


def build_warehouse(wh: Warehouse, n_posts: int, seed: int) -> None:
    """Generate the whole warehouse; secondary indexes are dropped for the load and rebuilt after."""
    wh.ensure_schema()
    register_prompts(wh, all_prompts())
    n_batches = -(-n_posts // BATCH_SIZE)
    params = {"batch_size": BATCH_SIZE, "fragments": FRAGMENTS, "id_base": 1_300_000_000_000_000_000,
              "dataset": DATASET, "split": SPLIT, "image_root": f"/data/{DATASET}/images/",
              "failure": FAILURE, "no_caption": NO_CAPTION, "missing_field": MISSING_FIELD, **RATES}
    started = time.perf_counter()
    with wh.connect() as con:
        con.execute("SET preserve_insertion_order = false")
        # A pseudo-random UBIGINT per (key, salt); hash(a, b) combines by XOR, so salts would correlate.
        con.execute("CREATE TEMP MACRO rnd(key, salt) AS hash(key * 64 + salt)")
        for name, frame in {**vocabulary(seed), "generators": generators_frame(),
                            "batches": batches_frame(n_batches, seed)}.items():
            con.register("frame", frame)
            con.execute(f"CREATE TEMP TABLE {name} AS SELECT * FROM frame")
            con.unregister("frame")
        indexes = [row[0] for row in con.execute(
            "SELECT index_name FROM duckdb_indexes() WHERE schema_name = ? AND NOT is_primary", [SCHEMA]).fetchall()]
        for index in indexes:
            con.execute(f"DROP INDEX {index}")
        step = BATCH_SIZE * CHUNK_BATCHES
        for first in range(0, n_posts, step):
            _generate_chunk(con, first, min(first + step, n_posts), params)
            print(f"  generated {min(first + step, n_posts):>7,} / {n_posts:,} posts "
                  f"({time.perf_counter() - started:5.1f} s)", flush=True)
    rebuilt, _ = timed(Warehouse(wh.path).ensure_schema)  # a fresh instance recreates the dropped indexes
    print(f"  secondary indexes rebuilt in {rebuilt:.1f} s", flush=True)


def timed(action: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def _rehash(values: pd.Series, salt: str, width: int) -> pd.Series:
    """New content-address-like ids for a new generation (missing stays missing)."""
    return values.map(lambda v: None if v is None else hashlib.sha256(f"{salt}:{v}".encode()).hexdigest()[:width])


def new_generation(old: dict[str, pd.DataFrame], run_id: str) -> dict[str, pd.DataFrame]:
    """The partition's rows as a re-materialization with another model writes them: every id,
    call, text and lineage column new, so every old row goes to history."""
    now = utc_now().replace(microsecond=0)
    new: dict[str, pd.DataFrame] = {}
    for table, frame in old.items():
        new[table] = frame.assign(**REGENERATE[table].lineage(), dagster_run_id=run_id, created_at=now,
                                  llm_call_id=_rehash(frame["llm_call_id"], run_id, 64))
    captions, key_info, intentions = new["captions"], new["key_info"], new["intentions"]
    captions["caption_id"] = _rehash(captions["caption_id"], run_id, 16)
    captions["description"] = captions["description"].str.replace("A photo of", "A detailed photograph of")
    key_info["key_info_id"] = _rehash(key_info["key_info_id"], run_id, 16)
    intentions["caption_id"] = _rehash(intentions["caption_id"], run_id, 16)
    intentions["key_info_id"] = _rehash(intentions["key_info_id"], run_id, 16)
    intentions["completion"] = intentions["completion"].str.replace(" about ", " regarding ")
    intentions["full_text"] = intentions["prefix"] + " " + intentions["completion"]
    return new


def bench_writes(wh: Warehouse, batches: list[str]) -> None:
    totals = []
    for batch in batches:
        old = {t: wh.query(f"SELECT * FROM {t} WHERE batch = ?", [batch]) for t in REGENERATE}
        run_id = str(uuid.uuid4())
        frames = new_generation(old, run_id)
        seconds = {}
        for table, frame in frames.items():
            seconds[table], _ = timed(partial(wh.replace_partition, table, batch, frame, replaced_by_run=run_id,
                                              unchanged_key=_SAME_GENERATION[table]))
        totals.append(sum(seconds.values()))
        detail = ", ".join(f"{t} {len(frames[t]):,} rows {s * 1000:.0f} ms" for t, s in seconds.items())
        print(f"  {batch}: {totals[-1] * 1000:.0f} ms ({detail})", flush=True)
    archived = wh.rows("SELECT count(*) FROM intentions_history WHERE superseded_by_run IS NOT NULL "
                       "AND batch IN (SELECT unnest(?::VARCHAR[]))", [batches])[0][0]
    print(f"1. batch write (captions + key_info + intentions, history archived): median "
          f"{statistics.median(totals) * 1000:.0f} ms, max {max(totals) * 1000:.0f} ms over {len(totals)} partitions "
          f"(target < 1,000 ms); {archived:,} intention rows archived", flush=True)


def lookup_times(wh: Warehouse, ids: list[str]) -> tuple[list[float], int]:
    """Seconds per `intention_card`, sorted, and how many cards listed other versions."""
    seconds, with_history = [], 0
    for intention_id in ids:
        elapsed, card = timed(partial(intention_card, wh, intention_id))
        seconds.append(elapsed)
        with_history += bool(card["other_versions"])
    return sorted(seconds), with_history


def bench_lineage(wh: Warehouse, lookups: int, seed: int) -> None:
    ids = [row[0] for row in wh.rows("SELECT intention_id FROM intentions")]
    sample = random.Random(seed).sample(ids, min(lookups, len(ids)))
    with wh.session():
        session, with_history = lookup_times(wh, sample)
    one_shot, _ = lookup_times(wh, sample)
    for label, seconds in (("in a session (file opened once)", session), ("one-shot (file opened per card)", one_shot)):
        p95 = seconds[int(0.95 * (len(seconds) - 1))]
        print(f"2. lineage card {label}: median {statistics.median(seconds) * 1000:.1f} ms, "
              f"p95 {p95 * 1000:.1f} ms, max {seconds[-1] * 1000:.1f} ms over {len(seconds):,} random ids "
              f"({with_history} with other versions) (target median < 20 ms)", flush=True)


def bench_statistics(wh: Warehouse) -> None:
    relation_s, stats = timed(lambda: relation_statistics(wh))
    overall_s, overall = timed(lambda: overall_statistics(wh))
    print(f"3. knowledge_base statistics: {(relation_s + overall_s):.2f} s (relation_statistics "
          f"{relation_s:.2f} s, overall_statistics {overall_s:.2f} s) (target < 5 s): "
          f"{overall['posts']:,} posts, {overall['intentions']:,} intentions, "
          f"failure rate {overall['failure_rate']:.1%}, models {overall['models']}", flush=True)
    print(stats.round(3).to_string(index=False), flush=True)


def bench_export(wh: Warehouse, out_dir: Path) -> None:
    seconds, paths = timed(lambda: export_knowledge_base(wh, out_dir))
    sizes = ", ".join(f"{kind} {_mb(path)}" for kind, path in paths.items())
    print(f"4. export: {seconds:.1f} s ({sizes})", flush=True)


def _load() -> str:
    """The machine's load, since other processes sharing the cores inflate every figure."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"


def _mb(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:,.1f} MB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--posts", type=int, default=PAPER_POSTS, help="posts to generate (ten intentions each)")
    parser.add_argument("--lookups", type=int, default=1_000, help="random intention ids to look up")
    parser.add_argument("--writes", type=int, default=5, help="partitions to replace (the median is reported)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="build the warehouse in this (new) folder and keep it")
    args = parser.parse_args(argv)

    root = args.keep or Path(tempfile.mkdtemp(prefix="miko-kb-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    wh = Warehouse(root / "warehouse.duckdb")
    if wh.path.exists():
        parser.error(f"{wh.path} exists; --keep needs a new folder")
    try:
        print(f"building {args.posts:,} posts, {args.posts * 10:,} intentions in {wh.path} ({_load()})", flush=True)
        built, _ = timed(lambda: build_warehouse(wh, args.posts, args.seed))
        counts = wh.rows(
            "SELECT (SELECT count(*) FROM posts), (SELECT count(*) FROM intentions), "
            "(SELECT count(*) FROM intentions_history), (SELECT count(*) FROM llm_calls), "
            "(SELECT count(*) FROM captions), (SELECT count(*) FROM key_info)")[0]
        print(f"built in {built:.0f} s: {counts[0]:,} posts, {counts[1]:,} intentions, {counts[2]:,} history rows, "
              f"{counts[3]:,} llm_calls, {counts[4]:,} captions, {counts[5]:,} key_info rows; "
              f"warehouse file {_mb(wh.path)}", flush=True)
        n_batches = -(-args.posts // BATCH_SIZE)
        # Full batches whose current intentions have no history yet (the majority generator).
        batches = [batch_key(f"{DATASET}-{SPLIT}", b) for b in range(n_batches - 1) if b % 10 != 3][: args.writes]
        bench_writes(wh, batches)
        bench_lineage(wh, args.lookups, args.seed)
        bench_statistics(wh)
        bench_export(wh, root / "export")
        print(f"warehouse file after the writes: {_mb(wh.path)} ({_load()})", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
