"""The call cache: bulk reads of successes, upserts where the first success wins, the writer."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from miko_assets.clock import utc_now
from miko_assets.llm.cache import (
    CacheWriteError,
    CallRecord,
    CallWriter,
    LLMCallCache,
)
from miko_assets.llm.models import LLMRequest, Message
from miko_assets.llm.provider_interface import ProviderReply
from miko_assets.llm.provider_registry import ProviderRegistry
from miko_assets.llm.records import reply_record
from miko_assets.llm.runner import LLMRunner
from miko_assets.warehouse.warehouse import Warehouse


def record(call_id: str, status: str, text: str) -> CallRecord:
    return CallRecord(
        call_id=call_id,
        provider="openai",
        model="m",
        request_json="{}",
        response_text=text,
        status=status,
        error=None if status == "ok" else "server_error: x",
        created_at=utc_now(),
    )


def test_lookups_and_flushes_from_threads_of_one_process_do_not_collide(tmp_path: Path) -> None:
    """A repair's cache lookup runs while the writer flushes: two opens of one file at once."""
    cache = LLMCallCache(Warehouse(tmp_path / "w.duckdb"))
    cache.put_many([record("seed", "ok", "x")])
    errors: list[Exception] = []

    def read() -> None:
        for _ in range(60):
            try:
                assert set(cache.get_many(["seed", "nothing"])) == {"seed"}
            except Exception as exc:  # noqa: BLE001  (collected for the assertion below)
                errors.append(exc)

    def write(k: int) -> None:
        for i in range(60):
            try:
                cache.put_many([record(f"{k}-{i}", "ok", "y")])
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(3)]
    threads += [threading.Thread(target=write, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert cache.warehouse.rows("SELECT count(*) FROM llm_calls")[0][0] == 121


def test_only_successful_calls_are_hits_and_the_first_success_wins(tmp_path: Path) -> None:
    cache = LLMCallCache(Warehouse(tmp_path / "w.duckdb"))
    cache.put_many([record("a", "failed", "a1"), record("b", "ok", "b1")])
    assert set(cache.get_many(["a", "b", "c"])) == {"b"}

    cache.put_many([record("a", "ok", "a2"), record("b", "failed", "b2"), record("b", "ok", "b3")])
    hits = cache.get_many(["a", "b"])
    assert hits["a"].response_text == "a2"  # a failed row is replaced
    assert hits["b"].response_text == "b1"  # a success is never overwritten
    # Within one batch a success beats a later failure of the same call.
    cache.put_many([record("c", "ok", "c1"), record("c", "failed", "c2")])
    assert cache.get_many(["c"])["c"].response_text == "c1"
    assert cache.warehouse.rows("SELECT count(*) FROM llm_calls") == [(3,)]  # none is doubled


def test_writer_flushes_while_running_and_reports_what_it_could_not_store(tmp_path: Path) -> None:
    cache = LLMCallCache(Warehouse(tmp_path / "w.duckdb"))
    writer = CallWriter(cache, flush_every=2, flush_interval_s=10).start()
    writer.put(record("x", "ok", "x"))
    writer.put(record("y", "ok", "y"))  # a full batch wakes the writer before the interval
    for _ in range(100):
        if writer.written == 2:
            break
        time.sleep(0.02)
    assert writer.written == 2
    writer.close()

    class Broken(LLMCallCache):
        def put_many(self, records: list[CallRecord]) -> int:  # type: ignore[override]
            raise OSError("disk full")

    broken = CallWriter(Broken(cache.warehouse), flush_every=1, flush_interval_s=0.05).start()
    broken.put(record("z", "ok", "z"))
    with pytest.raises(CacheWriteError, match="1 LLM call results were not stored"):
        broken.close()


def test_results_stored_by_another_producer_are_hits(tmp_path: Path) -> None:
    """How a batch-API collector fills the cache: a row per reply; the online path skips them."""
    warehouse = Warehouse(tmp_path / "w.duckdb")
    requests = [
        LLMRequest(
            provider="openai",
            model="gpt-4o-mini",
            messages=(Message(role="user", content=f"q{i}"),),
        )
        for i in range(3)
    ]
    replies = [
        ProviderReply(text="a0", finish_reason="stop"),
        ProviderReply(text="a1", finish_reason="length"),
    ]
    records = [
        reply_record(r, reply, cost_usd=0.001, stage="batch")[0]
        for r, reply in zip(requests, replies)
    ]
    assert [r.status for r in records] == ["ok", "failed"] and records[1].error.startswith("length")
    LLMCallCache(warehouse).put_many(records)

    # No provider is configured: only the hit can be served without one.
    result = LLMRunner(ProviderRegistry(env={}), warehouse).run(requests[:1])
    assert result.responses[0].from_cache and result.responses[0].text == "a0"


def test_a_hit_with_null_counts_reads_them_as_defaults(warehouse: Warehouse) -> None:
    """A row stored before a counting column existed has NULL there: the hit reads its default."""
    cache = LLMCallCache(warehouse)
    record = CallRecord(call_id="old-row", provider="openai", model="m", request_json="{}",
                        response_text="an answer", status="ok", created_at=utc_now())
    cache.put_many([record])
    warehouse.execute("UPDATE llm_calls SET tokens_cached = NULL, attempts = NULL WHERE call_id = 'old-row'")
    hit = cache.get_many(["old-row"])["old-row"]
    assert (hit.tokens_cached, hit.attempts, hit.response_text) == (0, 0, "an answer")
