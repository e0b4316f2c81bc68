"""How the embedded provider lends its model contexts: the one that already evaluated the
longest beginning of a prompt, one call at a time each, within the call's deadline."""

from __future__ import annotations

import threading
import time
from typing import Any, cast

import numpy as np
import pytest

from miko_assets.llm.local import _ContextPool
from miko_assets.llm.provider_interface import ProviderError


class EvaluatedTokens:
    """What the pool reads of a llama.cpp context: the tokens it holds evaluated."""

    def __init__(self, tokens: list[int]) -> None:
        self.input_ids = np.array(tokens + [0] * 8, dtype=np.intc)
        self.n_tokens = len(tokens)


def pool_of(*held: list[int]) -> _ContextPool:
    return _ContextPool(cast(Any, [EvaluatedTokens(tokens) for tokens in held]), cast(Any, None))


def lent(pool: _ContextPool, prompt: list[int]) -> int:
    with pool.context_for(prompt, time.monotonic() + 1) as (index, _):
        return index


def test_the_context_holding_the_longest_beginning_of_the_prompt_is_lent() -> None:
    pool = pool_of([1, 2, 3, 9], [1, 2, 7], [])
    assert lent(pool, [1, 2, 3, 4, 5]) == 0
    assert lent(pool, [1, 2, 7, 7]) == 1
    # Nothing shared: the first idle one.
    assert lent(pool, [5, 6]) == 0
    # A prompt shorter than what a context holds shares at most its own length.
    assert lent(pool, [1, 2]) == 0


def test_a_busy_context_is_not_lent_and_the_wait_ends_at_the_deadline() -> None:
    pool = pool_of([1, 2, 3], [])
    with pool.context_for([1, 2, 3], time.monotonic() + 1) as (first, _):
        assert first == 0
        # The best match is busy: the other one is lent.
        assert lent(pool, [1, 2, 3, 4]) == 1
        with pool.context_for([9], time.monotonic() + 1) as (second, _):
            assert second == 1
            started = time.monotonic()
            with pytest.raises(ProviderError, match="free model context") as refused:
                with pool.context_for([9], time.monotonic() + 0.2):
                    pass
            assert refused.value.retryable and time.monotonic() - started < 1


def test_a_waiting_call_gets_the_context_given_back() -> None:
    pool = pool_of([1])
    got: list[int] = []
    with pool.context_for([1], time.monotonic() + 1):
        waiter = threading.Thread(target=lambda: got.append(lent(pool, [1])))
        waiter.start()
        time.sleep(0.1)
        assert got == []
    waiter.join(timeout=5)
    assert got == [0]
