"""A fault-injecting fake of the OpenAI Chat Completions and Anthropic Messages APIs.

Behaviour is scripted by the prompt: when the first user message contains `script=<step>,...`,
the n-th request carrying that same message gets step n (the last step repeats). Steps:

  ok         a valid answer (JSON `{"answer": ...}` when the request asks for structured output)
  okc        `ok`, reporting half of the prompt tokens as served from the prompt cache
  bad        a completed answer that is not the expected JSON
  429        rate limited, `Retry-After: 1`
  429ms      rate limited, `retry-after-ms: 200`
  500 / 400  server error / bad request
  401        authentication error whose body echoes the key it got (as some servers do)
  slow       answers only after `slow_s` seconds (beyond any test timeout)
  malformed  HTTP 200 with a truncated JSON body
  length     finish reason `length` (Anthropic: `max_tokens`)
  filter     finish reason `content_filter` (Anthropic has none: answered as a refusal)
  refusal    an OpenAI `refusal` message (Anthropic: stop reason `refusal`)

A request without a script is answered `ok`; `latency_ms` delays every answer. `GET /stats`
returns the request count. Run it in a thread (`FakeLLMServer.start_in_thread`) or as a process
(`python -m miko_assets_tests.fake_llm_server --latency-ms 100`, prints `READY <port>`), so its
CPU does not count against a client being measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web

_SCRIPT = re.compile(r"script=([a-z0-9,]+)")
_REPO = Path(__file__).resolve().parents[1]


class FakeLLMServer:
    """The fake API; `requests` counts every POST, `steps` counts the scripted steps served."""

    def __init__(self, latency_ms: float = 0.0, slow_s: float = 3.0) -> None:
        self.latency_s = latency_ms / 1000.0
        self.slow_s = slow_s
        self.requests = 0
        self.steps: Counter[str] = Counter()
        self.last_body: dict[str, Any] | None = None
        self._seen: Counter[str] = Counter()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_get("/stats", self._stats)
        return app

    # -- scripting ------------------------------------------------------------------------

    def _step(self, body: dict[str, Any]) -> str:
        self.requests += 1
        self.last_body = body
        first_user = next((m for m in body.get("messages", []) if m.get("role") == "user"), None)
        text = _text_of(first_user["content"]) if first_user else ""
        match = _SCRIPT.search(text) if "script=" in text else None
        if not match:
            return "ok"
        self._seen[text] += 1
        script = match.group(1).split(",")
        step = script[min(self._seen[text], len(script)) - 1]
        self.steps[step] += 1
        return step

    async def _read(self, request: web.Request) -> tuple[dict[str, Any], str]:
        body = json.loads(await request.read())
        step = self._step(body)
        if step == "slow":
            await asyncio.sleep(self.slow_s)
        elif self.latency_s:
            await asyncio.sleep(self.latency_s)
        return body, step

    # -- OpenAI Chat Completions ----------------------------------------------------------

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body, step = await self._read(request)
        error = _error_for(step, request.headers.get("Authorization", ""), openai=True)
        if error is not None:
            return error
        if step == "malformed":
            return web.Response(
                text='{"id": "chatcmpl-x", "choices": [{"mess', content_type="application/json"
            )
        prompt_tokens = _prompt_tokens(body)
        wants_json = "response_format" in body
        content: str | None = _answer(body, step, wants_json)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        finish = {"length": "length", "filter": "content_filter"}.get(step, "stop")
        if step == "refusal":
            message = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
        reply = {
            "id": f"chatcmpl-{self.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": 12,
                "total_tokens": prompt_tokens + 12,
                "prompt_tokens_details": {
                    "cached_tokens": prompt_tokens // 2 if step == "okc" else 0
                },
            },
        }
        return web.Response(body=json.dumps(reply).encode(), content_type="application/json")

    # -- Anthropic Messages ---------------------------------------------------------------

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        body, step = await self._read(request)
        credential = request.headers.get("x-api-key") or request.headers.get("Authorization", "")
        error = _error_for(step, credential, openai=False)
        if error is not None:
            return error
        if step == "malformed":
            return web.Response(
                text='{"id": "msg_x", "content": [{"ty', content_type="application/json"
            )
        prompt_tokens = _prompt_tokens(body)
        tools = body.get("tools") or []
        stop = {"length": "max_tokens", "filter": "refusal", "refusal": "refusal"}.get(
            step, "end_turn"
        )
        if tools and stop == "end_turn":
            answer = json.loads(_answer(body, step, True)) if step != "bad" else {"wrong": 1}
            content = [
                {"type": "tool_use", "id": "toolu_1", "name": tools[0]["name"], "input": answer}
            ]
            stop = "tool_use"
        else:
            content = [{"type": "text", "text": _answer(body, step, False)}]
        cached = prompt_tokens // 2 if step == "okc" else 0
        reply = {
            "id": f"msg_{self.requests}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": prompt_tokens - cached,
                "output_tokens": 12,
                "cache_read_input_tokens": cached,
                "cache_creation_input_tokens": 0,
            },
        }
        return web.Response(body=json.dumps(reply).encode(), content_type="application/json")

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": self.requests, "steps": dict(self.steps)})

    # -- running --------------------------------------------------------------------------

    def start_in_thread(self) -> str:
        """Serve on a free port of 127.0.0.1 from a daemon thread; returns the base URL."""
        sock = _bound_socket()
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._start(sock))
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="fake-llm-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self, sock: socket.socket) -> None:
        self._runner = web.AppRunner(
            self.app(), handler_cancellation=True, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()


def start_process(latency_ms: float = 0.0) -> tuple[subprocess.Popen[str], str]:
    """Start the server in a child process; returns it and its base URL once it listens."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "miko_assets_tests.fake_llm_server",
            "--latency-ms",
            str(latency_ms),
        ],
        cwd=_REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"fake server did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}"


def _error_for(step: str, credential: str, *, openai: bool) -> web.Response | None:
    statuses = {"429": 429, "429ms": 429, "500": 500, "401": 401, "400": 400}
    if step not in statuses:
        return None
    status = statuses[step]
    headers = (
        {"Retry-After": "1"}
        if step == "429"
        else {"retry-after-ms": "200"}
        if step == "429ms"
        else {}
    )
    message = {
        429: "Rate limit reached, try again later.",
        500: "The server had an error while processing your request.",
        401: f"Incorrect API key provided: {credential.removeprefix('Bearer ')}.",
        400: "Invalid request.",
    }[status]
    if openai:
        payload: dict[str, Any] = {
            "error": {"message": message, "type": "error", "code": str(status)}
        }
    else:
        kind = {
            429: "rate_limit_error",
            500: "api_error",
            401: "authentication_error",
            400: "invalid_request_error",
        }
        payload = {"type": "error", "error": {"type": kind[status], "message": message}}
    return web.Response(
        status=status,
        body=json.dumps(payload).encode(),
        headers=headers,
        content_type="application/json",
    )


def _answer(body: dict[str, Any], step: str, wants_json: bool) -> str:
    if step == "bad":
        return "Sure! Here is my answer, not in JSON."
    last = body["messages"][-1]
    echo = _text_of(last["content"])[:40]
    if step == "length":
        return '{"answer": "cut off her'
    return json.dumps({"answer": echo}) if wants_json else f"answer: {echo}"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") for part in content if isinstance(part, dict))


def _prompt_tokens(body: dict[str, Any]) -> int:
    chars = sum(len(_text_of(m.get("content", ""))) for m in body.get("messages", []))
    system = body.get("system")
    if system:
        chars += len(_text_of(system))
    return max(1, chars // 4)


def _bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    server = FakeLLMServer(latency_ms=args.latency_ms)
    sock = _bound_socket()
    sock.listen(1024)
    print(f"READY {sock.getsockname()[1]}", flush=True)
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    web.run_app(server.app(), sock=sock, access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main()
