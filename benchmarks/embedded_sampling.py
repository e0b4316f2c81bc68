"""What the embedded model's settings cost per call, on the demo's kind of call.

Per-relation completions of the bundled sample's posts (ten calls a post, each a clause under
the continuation grammar), timed three ways in one run:
  - grammar first, one context on two threads (llama-cpp-python's chain; the old setting);
  - grammar checked lazily (`llm.lazy_grammar`), one context on two threads;
  - grammar checked lazily, two one-thread contexts answering at once (today's default).
It prints seconds per call and each way's speed against the first, measured in the same run.

    python benchmarks/embedded_sampling.py [--posts 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

from llama_cpp import Llama, LlamaGrammar

from miko_assets.distill.relations import RELATIONS
from miko_assets.llm.lazy_grammar import LazyGrammarLlama
from miko_assets.llm.local import REPEAT_PENALTY, _chat_formatter, continuation_grammar, default_gguf_path
from miko_assets.llm.models import Continuation

SAMPLE = Path(__file__).resolve().parents[1] / "miko_assets" / "sample_data" / "posts.jsonl"


def prompts(posts: int) -> list[tuple[str, str]]:
    """(rendered prompt ending in the relation's prefix, grammar) for each post and relation."""
    texts = [json.loads(line)["text"] for line in SAMPLE.read_text().splitlines()[:posts]]
    formatter = _chat_formatter(default_gguf_path(), _model(Llama, 1))
    made = []
    for text in texts:
        for relation in RELATIONS:
            content = (f'Text: "{text}"\nComplete the sentence: {relation.prefix} ...\n'
                       "Answer with one short clause that continues the sentence.")
            rendered = formatter(messages=[{"role": "user", "content": content}])
            grammar = continuation_grammar(Continuation(prefix=relation.prefix))
            made.append((rendered.prompt + relation.prefix, grammar))
    return made


def _model(kind: type[Llama], threads: int) -> Llama:
    return kind(model_path=str(default_gguf_path()), n_ctx=2048, n_threads=threads,
                n_threads_batch=threads, verbose=False)


def answer(llm: Llama, calls: list[tuple[str, str]]) -> None:
    for prompt, grammar in calls:
        llm.create_completion(prompt=prompt, max_tokens=64, temperature=0.3, repeat_penalty=REPEAT_PENALTY,
                              seed=0, grammar=LlamaGrammar.from_string(grammar, verbose=False))


def timed(contexts: list[Llama], calls: list[tuple[str, str]]) -> float:
    """Seconds per call, each context answering whole posts (ten calls) in turn."""
    shares = [calls[i * 10:(i + 1) * 10] for i in range(len(calls) // 10)]
    started = time.perf_counter()
    threads = [threading.Thread(target=lambda mine=mine, llm=llm: [answer(llm, s) for s in mine])
               for llm, mine in zip(contexts, [shares[i::len(contexts)] for i in range(len(contexts))])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return (time.perf_counter() - started) / len(calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="the ways alternate this many times")
    args = parser.parse_args()
    calls = prompts(args.posts)
    ways = {
        "grammar first, 1 context x 2 threads": [_model(Llama, 2)],
        "lazy grammar, 1 context x 2 threads": [_model(LazyGrammarLlama, 2)],
        "lazy grammar, 2 contexts x 1 thread": [_model(LazyGrammarLlama, 1), _model(LazyGrammarLlama, 1)],
    }
    for contexts in ways.values():
        for llm in contexts:
            answer(llm, calls[:1])
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(args.rounds):
        for way, contexts in ways.items():
            seconds[way].append(timed(contexts, calls))
    baseline = min(seconds[next(iter(ways))])
    print(f"{len(calls)} calls ({args.posts} posts x {len(RELATIONS)} relations), best of {args.rounds} rounds")
    for way, measured in seconds.items():
        best = min(measured)
        print(f"  {way:<40} {best:.3f} s a call   {baseline / best:.2f}x the first")


if __name__ == "__main__":
    main()
