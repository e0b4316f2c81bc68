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
  fill       `ok`, answering every property of the requested schema with a short text (for
             stage prompts, whose schemas are not `{"answer": ...}`); plain `ok` without a schema

A request without a script is answered `ok`; `latency_ms` delays every answer. `GET /stats`
returns the request count. Run it in a thread (`FakeLLMServer.start_in_thread`) or as a process
(`python -m miko_assets.devtools.fake_llm_server --latency-ms 100`, prints `READY <port>`), so its
CPU does not count against a client being measured.

Batch APIs: OpenAI Batch (`POST /v1/files`, `POST /v1/batches`, `GET /v1/batches/{id}`,
`GET /v1/files/{id}/content`) and Anthropic Message Batches (`POST /v1/messages/batches`,
`GET /v1/messages/batches/{id}`, `GET .../results`). A submitted batch stays in progress until
`complete_batches()` answers each of its items as the online endpoint would (scripts included:
an item's step counts as one request; `5xx`/`4xx` steps become errored items), or, with
`expire=True`, ends the batch expired with no answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from miko_assets.devtools.serving import bound_socket, serve, server_process

_SCRIPT = re.compile(r"script=([a-z0-9,]+)")


class FakeLLMServer:
    """The fake API; `requests` counts every POST, `steps` counts the scripted steps served."""

    def __init__(self, latency_ms: float = 0.0, slow_s: float = 3.0) -> None:
        self.latency_s = latency_ms / 1000.0
        self.slow_s = slow_s
        self.requests = 0
        self.steps: Counter[str] = Counter()
        self.last_body: dict[str, Any] | None = None
        # Batches of both APIs by id, as the API shows them, and their submitted items.
        self.batches: dict[str, dict[str, Any]] = {}
        self.batch_items: dict[str, list[dict[str, Any]]] = {}
        self._files: dict[str, bytes] = {}
        self._seen: Counter[str] = Counter()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/v1/files", self._upload_file)
        app.router.add_get("/v1/files/{id}/content", self._file_content)
        app.router.add_post("/v1/batches", self._create_openai_batch)
        app.router.add_get("/v1/batches/{id}", self._get_batch)
        app.router.add_post("/v1/messages/batches", self._create_anthropic_batch)
        app.router.add_get("/v1/messages/batches/{id}", self._get_batch)
        app.router.add_get("/v1/messages/batches/{id}/results", self._anthropic_results)
        app.router.add_get("/stats", self._stats)
        return app

    # -- scripting ------------------------------------------------------------------------

    def _step(self, body: dict[str, Any]) -> str:
        self.requests += 1
        self.last_body = body
        first_user = next((m for m in body.get("messages", []) if m.get("role") == "user"), None)
        text = text_of(first_user["content"]) if first_user else ""
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

    async def _openai(self, request: web.Request) -> web.Response:
        body, step = await self._read(request)
        return self._openai_reply(body, step, request.headers.get("Authorization", ""))

    def _openai_reply(self, body: dict[str, Any], step: str, credential: str) -> web.Response:
        error = error_for(step, credential, openai=True)
        if error is not None:
            return error
        if step == "malformed":
            return web.Response(
                text='{"id": "chatcmpl-x", "choices": [{"mess', content_type="application/json"
            )
        n_prompt = prompt_tokens(body)
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
                "prompt_tokens": n_prompt,
                "completion_tokens": 12,
                "total_tokens": n_prompt + 12,
                "prompt_tokens_details": {
                    "cached_tokens": n_prompt // 2 if step == "okc" else 0
                },
            },
        }
        return web.Response(body=json.dumps(reply).encode(), content_type="application/json")

    # -- Anthropic Messages ---------------------------------------------------------------

    async def _anthropic(self, request: web.Request) -> web.Response:
        body, step = await self._read(request)
        return self._anthropic_reply(body, step, _credential(request))

    def _anthropic_reply(self, body: dict[str, Any], step: str, credential: str) -> web.Response:
        error = error_for(step, credential, openai=False)
        if error is not None:
            return error
        if step == "malformed":
            return web.Response(
                text='{"id": "msg_x", "content": [{"ty', content_type="application/json"
            )
        n_prompt = prompt_tokens(body)
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
        cached = n_prompt // 2 if step == "okc" else 0
        reply = {
            "id": f"msg_{self.requests}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": n_prompt - cached,
                "output_tokens": 12,
                "cache_read_input_tokens": cached,
                "cache_creation_input_tokens": 0,
            },
        }
        return web.Response(body=json.dumps(reply).encode(), content_type="application/json")

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": self.requests, "steps": dict(self.steps)})

    # -- batch APIs -----------------------------------------------------------------------

    async def _upload_file(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form["file"]
        assert isinstance(upload, web.FileField) and form.get("purpose") == "batch"
        content = upload.file.read()
        file_id = f"file-{len(self._files) + 1}"
        self._files[file_id] = content
        return web.json_response(_file_object(file_id, len(content), upload.filename))

    async def _file_content(self, request: web.Request) -> web.Response:
        content = self._files.get(request.match_info["id"])
        if content is None:
            return web.json_response({"error": {"message": "No such file"}}, status=404)
        return web.Response(body=content, content_type="application/octet-stream")

    async def _create_openai_batch(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        lines = self._files[body["input_file_id"]].decode().splitlines()
        items = [json.loads(line) for line in lines if line.strip()]
        assert body["endpoint"] == "/v1/chat/completions" and body["completion_window"] == "24h"
        assert all(i["method"] == "POST" and i["url"] == body["endpoint"] for i in items)
        batch_id = f"batch_{len(self.batches) + 1}"
        self.batches[batch_id] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": body["endpoint"],
            "input_file_id": body["input_file_id"],
            "completion_window": "24h",
            "status": "in_progress",
            "created_at": int(time.time()),
            "output_file_id": None,
            "error_file_id": None,
            "request_counts": {"total": len(items), "completed": 0, "failed": 0},
        }
        self.batch_items[batch_id] = [
            {"custom_id": i["custom_id"], "body": i["body"], "credential": _credential(request)}
            for i in items
        ]
        return web.json_response(self.batches[batch_id])

    async def _create_anthropic_batch(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        batch_id = f"msgbatch_{len(self.batches) + 1}"
        now = time.time()
        self.batches[batch_id] = {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": "in_progress",
            "request_counts": {
                "processing": len(body["requests"]),
                "succeeded": 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            },
            "created_at": _iso(now),
            "expires_at": _iso(now + 86400),
            "ended_at": None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": None,
        }
        self.batch_items[batch_id] = [
            {"custom_id": r["custom_id"], "body": r["params"], "credential": _credential(request)}
            for r in body["requests"]
        ]
        return web.json_response(self.batches[batch_id])

    async def _get_batch(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return web.json_response({"error": {"message": "No such batch"}}, status=404)
        if batch.get("results_url"):  # absolute, as the API gives it
            batch = batch | {"results_url": f"{request.url.origin()}{batch['results_url']}"}
        return web.json_response(batch)

    async def _anthropic_results(self, request: web.Request) -> web.Response:
        content = self._files.get(f"results-{request.match_info['id']}")
        if content is None:
            return web.json_response({"error": {"message": "Batch not ended"}}, status=404)
        return web.Response(body=content, content_type="application/binary")

    def complete_batches(self, *, expire: bool = False) -> None:
        """End every batch in progress: answer its items (or, with `expire`, none of them)."""
        assert self._loop is not None, "complete_batches needs start_in_thread"

        async def complete() -> None:
            for batch_id, batch in self.batches.items():
                if batch.get("status") == "in_progress":
                    self._end_openai_batch(batch, self.batch_items[batch_id], expire)
                elif batch.get("processing_status") == "in_progress":
                    self._end_anthropic_batch(batch, self.batch_items[batch_id], expire)

        asyncio.run_coroutine_threadsafe(complete(), self._loop).result(10)

    def _end_openai_batch(
        self, batch: dict[str, Any], items: list[dict[str, Any]], expire: bool
    ) -> None:
        output, errors = [], []
        for n, item in enumerate(items):
            line: dict[str, Any] = {"id": f"batch_req_{n}", "custom_id": item["custom_id"]}
            if expire:
                line["response"] = None
                line["error"] = {"code": "batch_expired", "message": "This request expired."}
                errors.append(line)
                continue
            reply = self._openai_reply(item["body"], self._step(item["body"]), item["credential"])
            line["response"] = {
                "status_code": reply.status,
                "request_id": f"req_{n}",
                "body": json.loads(reply.body),
            }
            line["error"] = None
            (output if reply.status == 200 else errors).append(line)
        for kind, lines in (("output", output), ("error", errors)):
            if lines:
                file_id = f"file-{batch['id']}-{kind}"
                self._files[file_id] = "".join(json.dumps(x) + "\n" for x in lines).encode()
                batch[f"{kind}_file_id"] = file_id
        batch["status"] = "expired" if expire else "completed"
        batch["request_counts"] = {
            "total": len(items),
            "completed": len(output),
            "failed": len(errors),
        }

    def _end_anthropic_batch(
        self, batch: dict[str, Any], items: list[dict[str, Any]], expire: bool
    ) -> None:
        counts: Counter[str] = Counter()
        lines = []
        for item in items:
            result: dict[str, Any] = {"type": "expired"}
            if not expire:
                body = item["body"]
                reply = self._anthropic_reply(body, self._step(body), item["credential"])
                answer = json.loads(reply.body)
                result = (
                    {"type": "succeeded", "message": answer}
                    if reply.status == 200
                    else {"type": "errored", "error": answer}
                )
            counts[result["type"]] += 1
            lines.append({"custom_id": item["custom_id"], "result": result})
        self._files[f"results-{batch['id']}"] = "".join(json.dumps(x) + "\n" for x in lines).encode()
        batch["processing_status"] = "ended"
        batch["ended_at"] = _iso(time.time())
        batch["results_url"] = f"/v1/messages/batches/{batch['id']}/results"
        batch["request_counts"] = {
            k: counts[k] for k in ("succeeded", "errored", "canceled", "expired")
        } | {"processing": 0}

    # -- running --------------------------------------------------------------------------

    def start_in_thread(self) -> str:
        """Serve on a free port of 127.0.0.1 from a daemon thread; returns the base URL."""
        sock = bound_socket()
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


@contextmanager
def fake_llm_process(latency_ms: float = 0.0) -> Iterator[str]:
    """Run the server in a child process; yields its base URL once it listens, stops it on exit."""
    with server_process(
        "miko_assets.devtools.fake_llm_server", "--latency-ms", str(latency_ms)
    ) as (_, url):
        yield url


def _credential(request: web.Request) -> str:
    return request.headers.get("x-api-key") or request.headers.get("Authorization", "")


def _file_object(file_id: str, size: int, filename: str) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": int(time.time()),
        "filename": filename,
        "purpose": "batch",
        "status": "processed",
    }


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def error_for(step: str, credential: str, *, openai: bool) -> web.Response | None:
    """The scripted error response for `step` (a fault name), or None to answer normally."""
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
    echo = text_of(last["content"])[:40]
    if step == "length":
        return '{"answer": "cut off her'
    if step == "fill" and (wants_json or body.get("tools")):
        return json.dumps({name: f"a short {name} answer" for name in _schema_of(body)["properties"]})
    return json.dumps({"answer": echo}) if wants_json else f"answer: {echo}"


def _schema_of(body: dict[str, Any]) -> dict[str, Any]:
    """The output schema of a Chat Completions or Messages body."""
    if body.get("tools"):
        return body["tools"][0]["input_schema"]
    response_format = body["response_format"]
    return response_format.get("json_schema", response_format)["schema"]


def text_of(content: Any) -> str:
    """A message content's text: the string, or its text parts joined (image parts carry none)."""
    if isinstance(content, str):
        return content
    return " ".join(part["text"] for part in content if isinstance(part, dict) and "text" in part)


def prompt_tokens(body: dict[str, Any]) -> int:
    """A rough prompt token count (4 characters a token) for the usage block."""
    chars = sum(len(text_of(m.get("content", ""))) for m in body.get("messages", []))
    system = body.get("system")
    if system:
        chars += len(text_of(system))
    return max(1, chars // 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    serve(FakeLLMServer(latency_ms=args.latency_ms).app())


if __name__ == "__main__":
    main()
