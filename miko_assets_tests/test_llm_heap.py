"""While a batch's calls are in flight the heap that existed before it is frozen, so the
garbage collector's full passes walk only what the batch made, and young objects are collected
less often; both are undone afterwards."""

from __future__ import annotations

import gc
import threading

from miko_assets.llm.heap import BATCH_YOUNG_THRESHOLD, collector_settings_for_a_batch
from miko_assets.llm.models import LLMRequest, Message
from miko_assets.llm.provider_interface import ProviderReply
from miko_assets.llm.provider_registry import ProviderRegistry
from miko_assets.llm.runner import LLMRunner


class FreezeWatcher:
    """A provider that notes how many objects are frozen while each call is sent."""

    name = "openai"
    enforces_timeout = True

    def __init__(self) -> None:
        self.frozen_during_calls: list[int] = []
        self.thresholds_during_calls: set[tuple[int, int, int]] = set()

    async def send(self, request: LLMRequest, timeout_s: float) -> ProviderReply:
        self.frozen_during_calls.append(gc.get_freeze_count())
        self.thresholds_during_calls.add(gc.get_threshold())
        return ProviderReply(text="an answer", finish_reason="stop")

    async def aclose(self) -> None:
        pass


def test_a_batch_runs_with_the_older_heap_frozen_and_unfreezes_it_after() -> None:
    assert gc.get_freeze_count() == 0
    before = gc.get_threshold()
    provider = FreezeWatcher()
    requests = [
        LLMRequest(provider="openai", model="gpt-4o-mini", messages=(Message(role="user", content=f"q{i}"),))
        for i in range(5)
    ]
    result = LLMRunner(ProviderRegistry(env={}, providers=[provider])).run(requests)
    assert result.summary.succeeded == 5
    assert len(provider.frozen_during_calls) == 5
    assert min(provider.frozen_during_calls) > 1000, "the process's modules and objects are frozen"
    assert gc.get_freeze_count() == 0, "the heap is unfrozen when the batch ends"
    assert provider.thresholds_during_calls == {(BATCH_YOUNG_THRESHOLD, *before[1:])}
    assert gc.get_threshold() == before


def test_overlapping_blocks_keep_the_heap_frozen_until_the_last_ends() -> None:
    first_in, second_done, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def first() -> None:
        with collector_settings_for_a_batch():
            first_in.set()
            second_done.wait(5)
            seen["first, after the second ended"] = gc.get_freeze_count()
        first_out.set()

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(5)
    with collector_settings_for_a_batch():
        seen["second"] = gc.get_freeze_count()
    second_done.set()
    thread.join(5)
    assert seen["second"] > 0 and seen["first, after the second ended"] > 0
    assert first_out.is_set() and gc.get_freeze_count() == 0
    assert gc.get_threshold()[0] != BATCH_YOUNG_THRESHOLD


def test_a_block_that_raises_unfreezes_the_heap() -> None:
    try:
        with collector_settings_for_a_batch():
            raise ValueError("the batch failed")
    except ValueError:
        pass
    assert gc.get_freeze_count() == 0 and gc.get_threshold()[0] != BATCH_YOUNG_THRESHOLD
