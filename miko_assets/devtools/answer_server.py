"""A local OpenAI-compatible server that answers every MIKO stage in its format, with seeded faults.

POST /v1/chat/completions answers
  - a request with an image: a caption (plain text);
  - a key-information request: a JSON object with concept, action, object, emotion and keywords
    when the request carries a JSON schema, `Concept: ...` lines otherwise;
  - an intentions request: a JSON object with the ten relation keys (xWant ... Open) when the
    request carries a JSON schema, `Intention1: <prefix> ...` lines otherwise.
Answers are derived from the request hash, so the same request always gets the same answer.

Faults: the n-th attempt of a request fails with probability `fault_rate`, drawn from a random
generator seeded by (seed, request hash, n), so a run is reproducible whatever the concurrency.
Kinds: `429` (with `Retry-After`), `500`, `timeout` (no answer for `hang_s`), `malformed_body`
(HTTP 200 with a truncated JSON body) and `bad_answer` (a completed answer that is not in the
stage's format). `POST /control` with `{"fault_rate": 0}` (or any option) changes them live.

GET /stats: requests, completed answers (HTTP 200 with a completion, in the stage's format or
not), faults by kind and requests by stage; with `?hashes=1` also the completed answers per
request hash (`request_hash` of the HTTP body; `fingerprint_hash` computes
the same hash from an `llm_calls.request_json`).

    python -m miko_assets.devtools.answer_server --latency-ms 100 --fault-rate 0.1 --seed 7
prints `READY <port>` once it listens on 127.0.0.1. Tests and benchmarks use `answer_server()`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import random
import re
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from miko_assets.devtools.fake_llm_server import error_for, prompt_tokens, text_of
from miko_assets.devtools.serving import serve, server_process
from miko_assets.distill.relations import RELATIONS
from miko_assets.llm.models import canonical_json

FAULT_KINDS = ("429", "500", "timeout", "malformed_body", "bad_answer")
_POST_TEXT = re.compile(r'(?:Text|text)[^"]{0,20}"(.{1,400}?)"', re.DOTALL)
_WORD = re.compile(r"[A-Za-z]{4,}")
_VOCABULARY = (
    "coffee", "train", "weekend", "friends", "weather", "music", "deadline", "city", "dinner",
    "sunset", "football", "exam", "holiday", "traffic", "garden", "concert", "office", "rain",
)
_EMOTIONS = ("joy", "frustration", "pride", "irony", "boredom", "excitement", "relief", "anger")


@dataclass
class ServerOptions:
    """How the server behaves; every field can be changed live through `POST /control`."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    fault_rate: float = 0.0
    faults: tuple[str, ...] = FAULT_KINDS
    seed: int = 0
    hang_s: float = 30.0
    retry_after_s: float = 1.0

    def update(self, changes: dict[str, Any]) -> None:
        for name, value in changes.items():
            if name not in {f.name for f in dataclasses.fields(self)}:
                raise ValueError(f"unknown option {name!r}")
            setattr(self, name, tuple(value) if name == "faults" else type(getattr(self, name))(value))
        unknown = set(self.faults) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")


def request_hash(model: str, messages: list[tuple[str, str]], schema: dict[str, Any] | None,
                 temperature: float | None, max_tokens: int | None) -> str:
    """The identity of a request as the server counts it: model, message texts, schema, params."""
    text = canonical_json([model, messages, schema, temperature, max_tokens])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def body_hash(body: dict[str, Any]) -> str:
    """`request_hash` of a Chat Completions body (images count by the text around them)."""
    messages = [(m.get("role", ""), text_of(m.get("content") or "")) for m in body.get("messages", [])]
    return request_hash(body.get("model", ""), messages, _schema_of(body),
                        body.get("temperature"), body.get("max_tokens"))


def fingerprint_hash(request_json: str) -> str:
    """`request_hash` of a request as stored in `llm_calls.request_json`."""
    request = json.loads(request_json)
    messages = [(m["role"], m["content"]) for m in request["messages"]]
    params = request["params"]
    return request_hash(request["model"], messages, request.get("output_schema"),
                        params.get("temperature"), params.get("max_tokens"))


def _schema_of(body: dict[str, Any]) -> dict[str, Any] | None:
    response_format = body.get("response_format") or {}
    return (response_format.get("json_schema") or {}).get("schema") or response_format.get("schema")


def stage_of(body: dict[str, Any]) -> str:
    """`captions`, `key_info`, `intentions` or `text`, from the images, schema or prompt of a body."""
    messages = body.get("messages", [])
    if any(isinstance(m.get("content"), list)
           and any(p.get("type") == "image_url" for p in m["content"]) for m in messages):
        return "captions"
    properties = (_schema_of(body) or {}).get("properties", {})
    prompt = " ".join(text_of(m.get("content") or "") for m in messages if m.get("role") == "user")
    if "xWant" in properties or "Intention1" in prompt:
        return "intentions"
    if "concept" in properties or "Concept:" in prompt:
        return "key_info"
    return "text"


def stage_answer(body: dict[str, Any], key: str) -> str:
    """A well-formed answer for the request's stage, the same every time for the same request."""
    rng = random.Random(key)
    first_user = next((m for m in body.get("messages", []) if m.get("role") == "user"), {})
    found = _POST_TEXT.search(text_of(first_user.get("content") or ""))
    words = _WORD.findall(found.group(1) if found else "")[:4] or [rng.choice(_VOCABULARY)]
    topic = " ".join(words[:2]).lower()
    stage = stage_of(body)
    wants_json = _schema_of(body) is not None
    if stage == "captions":
        return (f"The image shows a {rng.choice(_VOCABULARY)} scene related to {topic}, with "
                f"{rng.randint(1, 5)} people in warm light and a {rng.choice(_VOCABULARY)} in the background.")
    if stage == "key_info":
        fields = {
            "concept": f"{topic} and {rng.choice(_VOCABULARY)}",
            "action": f"sharing a moment about {words[0].lower()}",
            "object": rng.choice(_VOCABULARY),
            "emotion": rng.choice(_EMOTIONS),
            "keywords": ", ".join(w.lower() for w in words[:3]),
        }
        if wants_json:
            return json.dumps(fields)
        return "\n".join(f"{name.capitalize()}: {value}" for name, value in fields.items())
    if stage == "intentions":
        completions = {
            r.name: f"{rng.choice(('share', 'show', 'talk about', 'celebrate'))} {topic} "
                    f"with {rng.choice(('friends', 'followers', 'everyone'))} ({rng.choice(_EMOTIONS)})"
            for r in RELATIONS
        }
        if wants_json:
            return json.dumps(completions)
        return "\n".join(f"Intention{r.number}: {r.prefix} {completions[r.name]}" for r in RELATIONS)
    return f"An answer about {topic}."


class MikoAnswerServer:
    """The server's state: options, and what it has served, per request hash."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.requests = 0
        self.attempts: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.stages: Counter[str] = Counter()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._complete)
        app.router.add_get("/stats", self._stats)
        app.router.add_post("/control", self._control)
        return app

    def fault_for(self, key: str, attempt: int) -> str | None:
        """The fault the `attempt`-th request with this hash gets, or None (seeded, reproducible)."""
        options = self.options
        if options.fault_rate <= 0 or not options.faults:
            return None
        rng = random.Random(f"{options.seed}:{key}:{attempt}")
        if rng.random() >= options.fault_rate:
            return None
        return rng.choice(options.faults)

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        key = body_hash(body)
        self.requests += 1
        self.attempts[key] += 1
        self.stages[stage_of(body)] += 1
        fault = self.fault_for(key, self.attempts[key])
        options = self.options
        if fault is not None:
            self.faults[fault] += 1
        if fault == "timeout":
            await asyncio.sleep(options.hang_s)
        delay = options.latency_ms + random.Random(key).uniform(-1, 1) * options.jitter_ms
        if delay > 0:
            await asyncio.sleep(delay / 1000.0)
        if fault in ("429", "500"):
            error = error_for(fault, "", openai=True)
            assert error is not None
            if fault == "429":
                error.headers["Retry-After"] = f"{options.retry_after_s:g}"
            return error
        if fault == "malformed_body":
            return web.Response(text='{"id": "chatcmpl-x", "choices": [{"mess', content_type="application/json")
        self.answered[key] += 1
        if fault == "bad_answer":
            content = "" if stage_of(body) == "captions" else "I'm sorry, I am not able to answer in that format."
        else:
            content = stage_answer(body, key)
        n_prompt = prompt_tokens(body)
        completion_tokens = max(1, len(content) // 4)
        reply = {
            "id": f"chatcmpl-{self.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": completion_tokens,
                      "total_tokens": n_prompt + completion_tokens},
        }
        return web.Response(body=json.dumps(reply).encode(), content_type="application/json")

    async def _stats(self, request: web.Request) -> web.Response:
        stats: dict[str, Any] = {
            "requests": self.requests,
            "distinct_requests": len(self.attempts),
            "answered": sum(self.answered.values()),
            "answered_more_than_once": sum(1 for n in self.answered.values() if n > 1),
            "faults": dict(self.faults),
            "stages": dict(self.stages),
            "options": dataclasses.asdict(self.options),
        }
        if request.query.get("hashes"):
            stats["answered_by_hash"] = dict(self.answered)
        return web.json_response(stats)

    async def _control(self, request: web.Request) -> web.Response:
        try:
            self.options.update(json.loads(await request.read()))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(dataclasses.asdict(self.options))


class AnswerServer:
    """A running server process: its base URL, and its stats and controls over HTTP."""

    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url

    @property
    def base_url(self) -> str:
        """What `MIKO_OPENAI_BASE_URL` should be."""
        return f"{self.url}/v1"

    def stats(self, hashes: bool = False) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/stats{'?hashes=1' if hashes else ''}", timeout=30) as response:
            return json.loads(response.read())

    def control(self, **changes: Any) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.url}/control", json.dumps(changes).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


@contextmanager
def answer_server(options: ServerOptions | None = None) -> Iterator[AnswerServer]:
    """Run the server in a child process on 127.0.0.1 (its CPU is not the client's); stopped on exit."""
    options = options or ServerOptions()
    args: list[str] = []
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        args += [f"--{field.name.replace('_', '-')}", ",".join(value) if field.name == "faults" else str(value)]
    with server_process("miko_assets.devtools.answer_server", *args) as (process, url):
        yield AnswerServer(process, url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = ServerOptions()
    for field in dataclasses.fields(defaults):
        value = getattr(defaults, field.name)
        parser.add_argument(f"--{field.name.replace('_', '-')}", default=value,
                            type=(lambda s: tuple(k for k in s.split(",") if k)) if field.name == "faults" else type(value))
    options = ServerOptions(**vars(parser.parse_args()))
    options.update({})  # validates the fault kinds
    serve(MikoAnswerServer(options).app(), handler_cancellation=True, shutdown_timeout=0.5)

if __name__ == "__main__":
    main()
