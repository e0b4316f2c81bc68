"""Grammar-constrained sampling that checks the grammar only when it has to.

llama-cpp-python puts the grammar first in its sampler chain, so at every token the grammar
is matched against the whole vocabulary (49,152 tokens for SmolLM2): on 2 cores that was
about 15 ms a token, more than the model's own forward pass, and doubled the time of a short
completion. llama.cpp's own sampler (`common_sampler_sample`) samples without the grammar
first and asks the grammar about that one token; only when the grammar rejects it are the
logits masked by the grammar and the token sampled again. The token drawn is the same as
sampling under the grammar whenever the grammar allows the first choice, and a sample from
the grammar-masked distribution otherwise, so the output obeys the grammar either way.
"""

from __future__ import annotations

import ctypes
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import Llama, LlamaGrammar
from llama_cpp import _internals as internals

_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)
assert _TOKEN_DATA.itemsize == ctypes.sizeof(llama_cpp.llama_token_data)


class LazyGrammarSampler:
    """Stands in for llama-cpp-python's sampler chain in `Llama.generate` (`sample`, which
    also accepts the token, as `llama_sampler_sample` does)."""

    def __init__(self, chain: internals.LlamaSampler, grammar: internals.LlamaSampler, n_vocab: int) -> None:
        self.chain = chain
        self.grammar = grammar
        self.n_vocab = n_vocab
        self.ids = np.arange(n_vocab, dtype=np.int32)
        self.candidates = np.zeros(n_vocab, dtype=_TOKEN_DATA)
        self.one = np.zeros(1, dtype=_TOKEN_DATA)
        self.resampled = 0

    def sample(self, ctx: internals.LlamaContext, idx: int = -1) -> int:
        token = self._draw(self.chain, ctx, idx)
        if not self._allowed(token):
            self.resampled += 1
            token = self._draw(self.grammar, ctx, idx, then=self.chain)
        llama_cpp.llama_sampler_accept(self.chain.sampler, token)
        llama_cpp.llama_sampler_accept(self.grammar.sampler, token)
        return token

    def _draw(
        self,
        first: internals.LlamaSampler,
        ctx: internals.LlamaContext,
        idx: int,
        then: internals.LlamaSampler | None = None,
    ) -> int:
        logits = llama_cpp.llama_get_logits_ith(ctx.ctx, idx)
        self.candidates["id"] = self.ids
        self.candidates["logit"] = np.ctypeslib.as_array(logits, shape=(self.n_vocab,))
        self.candidates["p"] = 0.0
        selected = _apply(first, self.candidates)
        if then is not None:
            selected = _apply(then, self.candidates)
        return int(self.candidates["id"][selected])

    def _allowed(self, token: int) -> bool:
        self.one[0] = (token, 1.0, 0.0)
        _apply(self.grammar, self.one)
        return bool(np.isfinite(self.one["logit"][0]))


def _apply(sampler: internals.LlamaSampler, candidates: np.ndarray) -> int:
    """Run `sampler` over `candidates` in place; the index it selected (-1 for none)."""
    array = llama_cpp.llama_token_data_array(
        data=candidates.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data)),
        size=len(candidates),
        selected=-1,
        sorted=False,
    )
    llama_cpp.llama_sampler_apply(sampler.sampler, ctypes.byref(array))
    return int(array.selected)


class LazyGrammarLlama(Llama):
    """`Llama` whose grammar-constrained generations use `LazyGrammarSampler`."""

    def _init_sampler(self, *, grammar: LlamaGrammar | None = None, **settings: Any) -> Any:
        chain = super()._init_sampler(grammar=None, **settings)
        if grammar is None:
            return chain
        grammar_only = internals.LlamaSampler()
        grammar_only.add_grammar(self._model, grammar)
        return LazyGrammarSampler(chain, grammar_only, self._n_vocab)
