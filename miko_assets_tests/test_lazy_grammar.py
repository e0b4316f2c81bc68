"""The lazy grammar sampler against llama-cpp-python's grammar-first chain, on the real
SmolLM2-135M-Instruct GGUF: the same greedy answers, and answers that obey the grammar."""

from __future__ import annotations

import re

import pytest
from llama_cpp import Llama, LlamaGrammar

from miko_assets.llm.lazy_grammar import LazyGrammarLlama, LazyGrammarSampler
from miko_assets.llm.local import continuation_grammar, default_gguf_path
from miko_assets.llm.models import Continuation

pytestmark = pytest.mark.slow

PROMPTS = [
    "<|im_start|>user\nThe tweet: \"Just ran my first marathon!\"\nComplete the sentence: "
    "After posting this Tweet, the user feels ...<|im_end|>\n<|im_start|>assistant\n"
    "After posting this Tweet, the user feels",
    "<|im_start|>user\nThe tweet: \"Monday again. Great.\"\nComplete the sentence: "
    "The user posts this Tweet because the user is ...<|im_end|>\n<|im_start|>assistant\n"
    "The user posts this Tweet because the user is",
]
CLAUSE = continuation_grammar(Continuation(prefix="x", min_words=3, max_words=12))
# Digits where the model wants words: most tokens it would pick are refused.
DIGITS = 'root ::= " " [0-9] [0-9] [0-9]? " apples."'


def _models() -> tuple[Llama, LazyGrammarLlama]:
    settings = {"model_path": str(default_gguf_path()), "n_ctx": 512, "n_threads": 2, "verbose": False}
    return Llama(**settings), LazyGrammarLlama(**settings)


@pytest.fixture(scope="module")
def models() -> tuple[Llama, LazyGrammarLlama]:
    return _models()


def _complete(llm: Llama, prompt: str, grammar: str, temperature: float, seed: int = 0) -> str:
    completion = llm.create_completion(
        prompt=prompt, max_tokens=40, temperature=temperature, repeat_penalty=1.1, seed=seed,
        grammar=LlamaGrammar.from_string(grammar, verbose=False),
    )
    return completion["choices"][0]["text"]  # type: ignore[index]


@pytest.mark.parametrize("grammar", [CLAUSE, DIGITS], ids=["clause", "digits"])
@pytest.mark.parametrize("prompt", PROMPTS, ids=["feels", "is"])
def test_greedy_answers_are_the_grammar_first_ones(models: tuple[Llama, LazyGrammarLlama], prompt: str, grammar: str) -> None:
    # At temperature 0 the first choice stands whenever the grammar allows it, and otherwise the
    # best allowed token is taken: what masking first would give.
    full, lazy = models
    assert _complete(lazy, prompt, grammar, 0.0) == _complete(full, prompt, grammar, 0.0)


def test_sampled_answers_obey_the_grammar_and_refused_tokens_are_drawn_again(
    models: tuple[Llama, LazyGrammarLlama],
) -> None:
    _, lazy = models
    for seed in range(5):
        clause = _complete(lazy, PROMPTS[0], CLAUSE, 0.7, seed)
        assert re.fullmatch(r" [a-z'\-]+(?:,? [a-z'\-]+){2,11}\.", clause), clause
        digits = _complete(lazy, PROMPTS[1], DIGITS, 0.7, seed)
        assert re.fullmatch(r" \d{2,3} apples\.", digits), digits
        sampler = lazy._sampler
        assert isinstance(sampler, LazyGrammarSampler) and sampler.resampled > 0
