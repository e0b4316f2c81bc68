"""Throughput of the LLM layer against a local OpenAI-compatible server with a fixed latency.

For each concurrency, N requests of about 330 prompt tokens go
  - through `LLMRunner` with the aiohttp transport (cache lookups and writes included),
  - through `LLMRunner` without a warehouse (no cache: the event loop's own work),
  - through `LLMRunner` with the official-SDK transport,
  - through the plain `openai` SDK behind a semaphore (no layer at all, for comparison),
  - through a bare aiohttp client (no layer, no bookkeeping: the ceiling here),
and the script prints requests/s against the ideal (concurrency / latency) and client CPU per
request (process CPU time, every thread included, / requests; in brackets the event loop's
thread alone) and the time the garbage collector stopped the process during the run. The layer
(with and without a warehouse) and the bare client alternate `--rounds` times, and the figure
that counts is the layer's throughput over the bare client's in the same round (next to each
other in time, so under about the same load), the median of the rounds. Then it times a fully cached
re-run of `--cached` requests, and the fixed costs each batch pays around its calls: rendering
and hashing the requests, opening the DuckDB file, the cache lookup before the first call and
the final flush after the last answer. The fake server runs in its own process, so its CPU is
not counted against the client.

    python benchmarks/llm_throughput.py [--requests 2000] [--concurrency 16 64 256] [--rounds 3]
        [--warehouse ducklake:sqlite:/tmp/lake.sqlite --data-path /tmp/lake_data]

The warehouse is a new DuckDB file in a temporary folder unless `--warehouse` names another
(a `ducklake:` URL, with `--data-path` for its files).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import duckdb
import openai

from miko_assets.clock import utc_now
from miko_assets.devtools.fake_llm_server import fake_llm_process
from miko_assets.llm.cache import CallRecord, LLMCallCache
from miko_assets.llm.config import RunnerConfig
from miko_assets.llm.event_loop import run_sync
from miko_assets.llm.models import GenerationParams, LLMRequest, Message, sha256_text
from miko_assets.llm.openai_provider import OpenAIProvider, OpenAISettings, chat_payload
from miko_assets.llm.provider_registry import ProviderRegistry
from miko_assets.llm.runner import LLMRunner
from miko_assets.warehouse.location import parse_location
from miko_assets.warehouse.warehouse import Warehouse

MODEL = "gpt-4o-mini"
SYSTEM = "You distil the intentions behind social-media posts. Answer in one short sentence."
# About 1,300 characters, so about 330 tokens with the system prompt.
FILLER = (
    "The user shared a photo of a crowded train platform at dawn with the caption below. "
    "Think about the concepts, actions, objects, emotions and keywords involved, and make "
    "the intention human-centric. "
) * 5


def make_requests(tag: str, n: int) -> list[LLMRequest]:
    params = GenerationParams(temperature=0.7, max_tokens=64)
    return [
        LLMRequest(
            provider="openai",
            model=MODEL,
            messages=(
                Message(role="system", content=SYSTEM),
                Message(
                    role="user", content=f"{FILLER}\nPost {tag}-{i}: another Monday, another delay."
                ),
            ),
            params=params,
        )
        for i in range(n)
    ]


class CollectorClock:
    """Seconds the garbage collector ran, and how many of its passes were full ones."""

    def __init__(self) -> None:
        self.seconds, self.full_passes, self._started = 0.0, 0, 0.0
        gc.callbacks.append(self._tick)

    def reset(self) -> None:
        self.seconds, self.full_passes = 0.0, 0

    def _tick(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.seconds += time.perf_counter() - self._started
        self.full_passes += info["generation"] == 2


COLLECTOR = CollectorClock()


def measure(
    label: str, concurrency: int, latency_s: float, work: Callable[..., int], *args: object
) -> float:
    """Run `work(*args)` (which returns how many requests it made), print the figures and
    return the requests per second."""
    COLLECTOR.reset()
    wall0, cpu0, loop0 = time.perf_counter(), time.process_time(), time.thread_time()
    n = work(*args)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    loop = time.thread_time() - loop0  # the event loop runs on this thread (`run_sync`)
    ideal = concurrency / latency_s
    rps = n / wall
    print(
        f"{label:<20} c={concurrency:<4} {rps:6.0f} req/s  ideal {ideal:5.0f}"
        f"  ratio {rps / ideal:4.2f}  client CPU {cpu / n * 1000:4.2f} ms/req"
        f" (event loop {loop / n * 1000:4.2f})  gc {COLLECTOR.seconds * 1000:4.0f} ms"
        f" ({COLLECTOR.full_passes} full)",
        flush=True,
    )
    return rps


def through_layer(runner: LLMRunner, requests: list[LLMRequest]) -> int:
    result = runner.run(requests, dagster_run_id="bench", stage="bench")
    assert result.summary.succeeded == result.summary.calls_made == len(requests), result.summary
    return len(requests)


def layer(base_url: str, transport: str, warehouse: Warehouse, concurrency: int) -> LLMRunner:
    provider = OpenAIProvider(OpenAISettings(base_url=base_url, transport=transport))
    config = RunnerConfig(concurrency=concurrency, timeout_s=30)
    return LLMRunner(ProviderRegistry(env={}, providers=[provider]), warehouse, config=config)


def plain_sdk(base_url: str, requests: list[LLMRequest], concurrency: int) -> int:
    """The official SDK behind a semaphore: no layer at all."""

    async def main() -> None:
        client = openai.AsyncOpenAI(api_key="unused", base_url=base_url, max_retries=0)
        gate = asyncio.Semaphore(concurrency)

        async def one(request: LLMRequest) -> None:
            async with gate:
                completion = await client.chat.completions.create(
                    **chat_payload(request), timeout=30
                )
                assert completion.choices[0].message.content

        await asyncio.gather(*(one(r) for r in requests))
        await client.close()

    run_sync(main)  # the event loop the layer uses, for a like-for-like comparison
    return len(requests)


def bare_aiohttp(base_url: str, requests: list[LLMRequest], concurrency: int) -> int:
    """A bare aiohttp client with no bookkeeping at all: the ceiling of this server and machine."""

    async def main() -> None:
        headers = {"Content-Type": "application/json"}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
            queue = iter(requests)

            async def worker() -> None:
                for request in queue:
                    body = json.dumps(chat_payload(request))
                    async with session.post(f"{base_url}/chat/completions", data=body) as response:
                        assert json.loads(await response.read())["choices"]

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    run_sync(main)  # the event loop the layer uses, for a like-for-like comparison
    return len(requests)


def fixed_costs_per_batch(warehouse: Warehouse, n: int, repeats: int = 5) -> None:
    """Median milliseconds of the work a batch of `n` requests does before its first call and after its last answer."""
    requests = make_requests("fixed", n)
    cache = LLMCallCache(warehouse)
    records = [
        CallRecord(call_id=sha256_text(r.request_json()), provider=r.provider, model=r.model,
                   request_json=r.request_json(), response_text="An answer.", status="ok", created_at=utc_now())
        for r in requests
    ]

    def render_and_hash() -> None:
        for request in requests:
            sha256_text(request.request_json())

    def open_file() -> None:
        with warehouse.connect():
            pass

    def flushes(size: int) -> Callable[[], object]:
        """Storing `size` results; each repeat writes new rows, as a batch's flushes do."""
        batches = iter([
            [r.model_copy(update={"call_id": f"{size}-{k}-{r.call_id}"}) for r in records[:size]]
            for k in range(repeats)
        ])
        return lambda: cache.put_many(next(batches))

    keys = [sha256_text(r.request_json()) for r in requests]
    steps: list[tuple[str, Callable[[], object]]] = [
        (f"render and hash {n} requests", render_and_hash),
        ("open and close the DuckDB file", open_file),
        ("open a DuckDB in-memory database", lambda: duckdb.connect(":memory:").close()),
        (f"cache lookup of {n} keys (before the first call)", lambda: cache.get_many(keys)),
        # About a second of answers at concurrency 64 is what the final flush writes; the
        # smaller and larger flushes show the part every flush pays whatever its size.
        ("final flush of 600 results (after the last answer)", flushes(600)),
        ("a flush of 100 results", flushes(100)),
        (f"a flush of {n} results", flushes(n)),
    ]
    print(f"fixed costs of a batch of {n}, median of {repeats}:")
    for label, step in steps:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            step()
            times.append((time.perf_counter() - started) * 1000)
        print(f"  {label:<55} {statistics.median(times):6.1f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--cached", type=int, default=10_000)
    parser.add_argument(
        "--rounds", type=int, default=3,
        help="layer and bare client alternate this many times per concurrency (the machine's load drifts)",
    )
    parser.add_argument("--warehouse", help="a warehouse location (default: a new DuckDB file)")
    parser.add_argument("--data-path", help="where a DuckLake warehouse keeps its files")
    args = parser.parse_args()
    latency_s = args.latency_ms / 1000
    with fake_llm_process(args.latency_ms) as url, tempfile.TemporaryDirectory() as tmp:
        base_url = f"{url}/v1"
        where = args.warehouse or str(Path(tmp) / "bench.duckdb")
        warehouse = Warehouse(parse_location(where, args.data_path))
        warehouse.ensure_schema()
        print(
            f"{args.requests} requests, server latency {args.latency_ms:g} ms, {MODEL}; "
            f"{len(gc.get_objects()):,} objects tracked by the garbage collector"
        )
        for c in args.concurrency:
            ratios: dict[str, list[float]] = {"layer": [], "layer, no warehouse": []}
            for round_ in range(args.rounds):
                rates = {}
                for label, store in (("layer", warehouse), ("layer, no warehouse", None)):
                    runner = layer(base_url, "aiohttp", store, c)
                    requests = make_requests(f"{label}-{c}-{round_}", args.requests)
                    rates[label] = measure(label, c, latency_s, through_layer, runner, requests)
                requests = make_requests(f"bare-{c}-{round_}", args.requests)
                bare_rps = measure("bare aiohttp client", c, latency_s, bare_aiohttp, base_url, requests, c)
                for label, rps in rates.items():
                    ratios[label].append(rps / bare_rps)
            for label, values in ratios.items():
                print(
                    f"{label} / bare client  c={c:<4} {statistics.median(values):4.2f} (median of "
                    f"{args.rounds} rounds: {', '.join(f'{r:.2f}' for r in values)})",
                    flush=True,
                )
            runner = layer(base_url, "sdk", warehouse, c)
            requests = make_requests(f"sdk-{c}", args.requests)
            measure("layer (sdk)", c, latency_s, through_layer, runner, requests)
            requests = make_requests(f"plain-{c}", args.requests)
            measure("plain openai SDK", c, latency_s, plain_sdk, base_url, requests, c)

        fixed_costs_per_batch(warehouse, args.requests)

        cached = make_requests("cached", args.cached)
        runner = layer(base_url, "aiohttp", warehouse, max(args.concurrency))
        through_layer(runner, cached)
        started = time.perf_counter()
        again = runner.run(cached)
        elapsed = time.perf_counter() - started
        assert again.summary.calls_made == 0 and again.summary.cache_hits == args.cached
        print(f"cached re-run of {args.cached} requests: {elapsed:.2f} s, 0 calls made")


if __name__ == "__main__":
    main()
