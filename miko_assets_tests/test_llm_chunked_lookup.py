"""A batch looked up in chunks while its first calls are in flight: duplicates are called once,
hits are not sent again, answers keep request order, progress counts every call, and an error
in a later chunk stops the batch without losing the results already made."""

from __future__ import annotations

import pytest

from miko_assets.devtools.fake_llm_server import FakeLLMServer
from miko_assets.llm import runner as runner_module
from miko_assets.llm.cache import LLMCallCache
from miko_assets.llm.progress import BatchProgress
from miko_assets.llm.provider_registry import ProviderConfigError
from miko_assets.warehouse.warehouse import Warehouse
from miko_assets_tests.conftest import Answer, make_provider, make_runner, request


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first chunk of one round (concurrency 2), then chunks of 3 requests."""
    monkeypatch.setattr(runner_module, "_CHUNK", 3)


def test_chunked_lookup_calls_each_miss_once_and_keeps_order(
    small_chunks: None, server: tuple[FakeLLMServer, str], warehouse: Warehouse
) -> None:
    fake, url = server
    cached = [request("openai", f"cached {i}") for i in range(4)]
    make_runner(make_provider("openai", url), warehouse).run(cached, Answer)
    sent_before = fake.requests
    fresh = [request("openai", f"fresh {i} script={'slow,ok' if i == 1 else 'ok'}") for i in range(5)]
    # Duplicates and hits spread over every chunk (2, then 3, 3, 3, 1 requests).
    batch = [fresh[0], cached[0], fresh[1], fresh[0], cached[3], fresh[2], cached[0], fresh[3],
             fresh[1], cached[2], fresh[4], fresh[4]]
    lines: list[str] = []
    progress = BatchProgress("test", lines.append, lines.append, every_s=0, every_share=0.01)

    result = make_runner(make_provider("openai", url), warehouse, concurrency=2).run(
        batch, Answer, progress=progress
    )

    assert fake.requests - sent_before == len(fresh) + 1  # the `slow` one is retried once
    assert [r.parsed.answer for r in result.responses] == [r.messages[-1].content[:40] for r in batch]
    assert [r.from_cache for r in result.responses] == [r in cached for r in batch]
    summary = result.summary
    assert (summary.requests, summary.unique_requests, summary.calls_made) == (12, 8, 5)
    assert summary.cache_hits == 3 and summary.succeeded == 12
    assert lines[0] == "test: 8 calls, 3 from the cache, 5 to make"
    assert lines[-1].startswith("test: 8/8 calls (3 from the cache, 0 failed)")
    stored = warehouse.rows("SELECT count(*) FROM llm_calls WHERE status = 'ok'")[0][0]
    assert stored == len(cached) + len(fresh)


def test_an_error_in_a_later_chunk_stores_the_calls_already_queued(
    small_chunks: None, server: tuple[FakeLLMServer, str], warehouse: Warehouse
) -> None:
    fake, url = server
    queued = [request("openai", f"sent {i}") for i in range(3)]
    unknown = request("openai", "never sent").model_copy(update={"provider": "nosuch"})

    with pytest.raises(ProviderConfigError):
        make_runner(make_provider("openai", url), warehouse, concurrency=2).run(
            [*queued, unknown], Answer
        )

    # The calls queued before the error were made, and none of their answers is lost.
    assert fake.requests == 3
    stored = {row[0] for row in warehouse.rows("SELECT call_id FROM llm_calls WHERE status = 'ok'")}
    assert stored == {r.cache_key() for r in queued}


def test_an_empty_batch_sends_nothing(server: tuple[FakeLLMServer, str], warehouse: Warehouse) -> None:
    fake, url = server
    lines: list[str] = []
    progress = BatchProgress("test", lines.append, lines.append)
    result = make_runner(make_provider("openai", url), warehouse).run([], Answer, progress=progress)
    assert result.responses == [] and result.summary.requests == 0 and fake.requests == 0
    assert lines == ["test: 0 calls, 0 from the cache, 0 to make"]


def test_results_are_stored_as_the_last_round_goes_out(
    server: tuple[FakeLLMServer, str], warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no timed flush during the batch, what is left to store after the last answer is at
    most the last round (4 calls), not the whole batch."""
    _, url = server
    stored: list[int] = []
    put_many = LLMCallCache.put_many

    def recording(self: LLMCallCache, records: list) -> int:
        stored.append(len(records))
        return put_many(self, records)

    monkeypatch.setattr(LLMCallCache, "put_many", recording)
    batch = [request("openai", f"round {i} script={'slow,ok' if i >= 20 else 'ok'}") for i in range(24)]
    runner = make_runner(make_provider("openai", url), warehouse, concurrency=4, flush_interval_s=60)

    result = runner.run(batch, Answer)

    assert result.summary.succeeded == 24 and sum(stored) == 24
    assert len(stored) == 2 and stored[-1] <= 4, stored
