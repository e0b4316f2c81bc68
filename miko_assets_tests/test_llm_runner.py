"""The runner against a fault-injecting server: exact retries, failures with reasons, cache hits."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from miko_assets.devtools.fake_llm_server import FakeLLMServer
from miko_assets.llm import retries
from miko_assets.llm.config import ProviderLimits, RunnerConfig
from miko_assets.llm.models import ImageInput, LLMRequest, Message
from miko_assets.llm.provider_interface import ProviderReply
from miko_assets.llm.validation import json_candidate, validate_answer
from miko_assets.warehouse.warehouse import Warehouse
from miko_assets_tests.conftest import Answer, make_provider, make_runner, request

# script -> status, failure reason, attempts (repair included), server hits
FAULTS: list[tuple[str, str, str | None, int]] = [
    ("ok", "ok", None, 1),
    ("500,500,ok", "ok", None, 3),
    ("429ms,ok", "ok", None, 2),
    ("malformed,ok", "ok", None, 2),
    ("slow,ok", "ok", None, 2),
    ("500", "failed", "server_error", 3),
    ("slow", "failed", "timeout", 3),
    ("400", "failed", "bad_request", 1),
    ("length", "failed", "length", 1),
    ("refusal", "failed", "refusal", 1),
    ("bad,ok", "ok", None, 2),
    ("bad,bad", "failed", "invalid_output", 2),
]


@pytest.mark.parametrize("kind", ["openai", "openai-sdk", "anthropic"])
def test_faults_are_retried_or_recorded_with_reasons(
    kind: str, server: tuple[FakeLLMServer, str], warehouse: Warehouse
) -> None:
    fake, url = server
    name = "anthropic" if kind == "anthropic" else "openai"
    faults = FAULTS + [
        ("filter", "failed", "refusal" if kind == "anthropic" else "content_filter", 1)
    ]
    requests = [
        request(name, f"question {i} script={script}") for i, (script, *_) in enumerate(faults)
    ]
    runner = make_runner(make_provider(kind, url), warehouse)

    result = runner.run(requests, Answer, dagster_run_id="run-1", stage="test")

    assert len(result.responses) == len(requests)
    for (script, status, reason, attempts), req, response in zip(
        faults, requests, result.responses
    ):
        assert (response.status, response.error_kind, response.attempts) == (
            status,
            reason,
            attempts,
        ), script
        if response.repair_of is None:
            assert response.call_id == req.cache_key(), script
        else:
            assert response.repair_of == req.cache_key(), script
        if status == "ok":
            assert isinstance(response.parsed, Answer) and response.error is None
        else:
            assert response.parsed is None and response.error.startswith(reason)
    assert fake.requests == sum(f[3] for f in faults)

    summary = result.summary
    expected_reasons: dict[str, int] = {}
    for _, status, reason, _ in faults:
        if reason:
            expected_reasons[reason] = expected_reasons.get(reason, 0) + 1
    assert summary.failures_by_reason == expected_reasons
    assert summary.succeeded == sum(1 for f in faults if f[1] == "ok")
    assert summary.attempts == fake.requests
    assert summary.repairs == 2 and summary.calls_made == len(faults) + 2
    assert summary.cache_hits == 0 and summary.cost_usd > 0

    rows = dict(warehouse.rows("SELECT call_id, status FROM llm_calls"))
    assert len(rows) == len(faults) + 2  # two repair calls
    by_script = {script: req.cache_key() for (script, *_), req in zip(faults, requests)}
    kept = dict(warehouse.rows("SELECT call_id, response_text FROM llm_calls"))
    assert "cut off" in kept[by_script["length"]]  # the raw answer of a failure is kept
    assert rows[by_script["bad,ok"]] == "ok" and rows[by_script["bad,bad"]] == "failed"
    errors = dict(warehouse.rows("SELECT call_id, error FROM llm_calls"))
    assert errors[by_script["500"]].startswith("server_error: HTTP 500")
    assert "repaired by call" in errors[by_script["bad,ok"]]
    meta = dict(warehouse.rows("SELECT call_id, dagster_run_id || '/' || stage FROM llm_calls"))
    assert set(meta.values()) == {"run-1/test"}


def test_retry_after_is_honoured(server: tuple[FakeLLMServer, str]) -> None:
    _, url = server
    runner = make_runner(make_provider("openai", url), None)
    started = time.perf_counter()
    result = runner.run([request("openai", "q script=429,ok")], Answer)
    assert time.perf_counter() - started >= 1.0  # the server said Retry-After: 1
    assert result.responses[0].status == "ok" and result.responses[0].attempts == 2

    too_long = make_runner(make_provider("openai", url), None, max_retry_after_s=0.5)
    failed = too_long.run([request("openai", "other script=429")], Answer).responses[0]
    assert (failed.status, failed.error_kind, failed.attempts) == ("failed", "rate_limited", 1)
    assert "Retry-After 1s is longer" in failed.error


def test_second_run_is_served_from_the_cache(
    server: tuple[FakeLLMServer, str], warehouse: Warehouse
) -> None:
    fake, url = server
    scripts = ["ok", "500,ok", "bad,ok", "okc", "ok"]
    requests = [request("openai", f"cached {i} script={s}") for i, s in enumerate(scripts)]
    requests.append(requests[0])  # a duplicate is called once
    first = make_runner(make_provider("openai", url), warehouse).run(requests, Answer)
    assert first.summary.unique_requests == 5 and first.summary.succeeded == 6
    hits_after_first = fake.requests

    second = make_runner(make_provider("openai", url), warehouse).run(requests, Answer)

    assert fake.requests == hits_after_first
    assert second.summary.calls_made == 0 and second.summary.attempts == 0
    assert second.summary.cost_usd == 0 and second.summary.cost_saved_usd == pytest.approx(
        first.summary.cost_usd
    )
    assert all(r.from_cache and r.status == "ok" for r in second.responses)
    assert [r.parsed for r in second.responses] == [r.parsed for r in first.responses]
    assert [r.call_id for r in second.responses] == [r.call_id for r in first.responses]


def test_failed_calls_are_made_again_and_replaced(
    server: tuple[FakeLLMServer, str], warehouse: Warehouse
) -> None:
    fake, url = server
    requests = [request("openai", "flaky script=length,ok"), request("openai", "fine script=ok")]
    runner = make_runner(make_provider("openai", url), warehouse)
    first = runner.run(requests, Answer)
    assert [r.status for r in first.responses] == ["failed", "ok"]
    second = runner.run(requests, Answer)
    assert [r.status for r in second.responses] == ["ok", "ok"]
    assert second.summary.calls_made == 1 and fake.requests == 3
    assert warehouse.rows(
        "SELECT status FROM llm_calls WHERE call_id = ?", [requests[0].cache_key()]
    ) == [("ok",)]


def test_results_keep_request_order_under_concurrency(server: tuple[FakeLLMServer, str]) -> None:
    _, url = server
    requests = [
        request("openai", f"order {i} script={'slow,ok' if i % 7 == 0 else 'ok'}")
        for i in range(40)
    ]
    result = make_runner(make_provider("openai", url), None, concurrency=16).run(requests, Answer)
    assert [r.parsed.answer for r in result.responses] == [
        r.messages[-1].content[:40] for r in requests
    ]


def test_plain_text_and_callable_validators(server: tuple[FakeLLMServer, str]) -> None:
    _, url = server
    runner = make_runner(make_provider("openai", url), None)
    text = runner.run([request("openai", "hello", schema=False)]).responses[0]
    assert (text.status, text.text, text.parsed) == ("ok", "answer: hello", None)

    schema_only = runner.run([request("openai", "json please")]).responses[0]
    assert schema_only.parsed == {"answer": "json please"}

    def shout(answer: str) -> str:
        if not answer.startswith("answer:"):
            raise ValueError("expected 'answer:'")
        return answer.upper()

    shouted = runner.run([request("openai", "quiet", schema=False)], shout).responses[0]
    assert shouted.parsed == "ANSWER: QUIET"


def test_validation_helpers() -> None:
    assert json_candidate('```json\n{"answer": "x"}\n```') == '{"answer": "x"}'
    assert json_candidate('Sure: {"answer": "x"} hope it helps') == '{"answer": "x"}'
    assert json_candidate('{"answer": "x"} hope it helps') == '{"answer": "x"}'
    assert json_candidate('Sure: {"answer": ') == 'Sure: {"answer":'  # no object: left to fail as it is
    assert json_candidate('[{"answer": "x"}] and more') == '[{"answer": "x"}] and more'
    parsed, problem = validate_answer(Answer, True, '{"answer": 3}')
    assert parsed is None and problem == "answer: Input should be a valid string"
    parsed, problem = validate_answer(None, True, "not json")
    assert parsed is None and problem.startswith("JSONDecodeError")


def test_images_travel_as_data_urls_and_base64_blocks(server: tuple[FakeLLMServer, str]) -> None:
    fake, url = server
    image = ImageInput(sha256="ab" * 32, media_type="image/png", data_b64="iVBORw0KGgo=")
    for kind, name in (("openai", "openai"), ("anthropic", "anthropic")):
        req = request(name, "describe")
        req = req.model_copy(
            update={"messages": (Message(role="user", content="describe", images=(image,)),)}
        )
        assert (
            make_runner(make_provider(kind, url), None).run([req], Answer).responses[0].status
            == "ok"
        )
        parts = fake.last_body["messages"][0]["content"]
        if kind == "openai":
            assert parts[1] == {
                "type": "image_url",
                "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
            }
        else:
            assert parts[0]["source"] == {
                "type": "base64",
                "media_type": "image/png",
                "data": "iVBORw0KGgo=",
            }
    # The key holds the image's sha, never its bytes.
    assert "iVBORw0KGgo" not in req.request_json() and "ab" * 32 in req.request_json()


def test_anthropic_request_shape(server: tuple[FakeLLMServer, str]) -> None:
    fake, url = server
    make_runner(make_provider("anthropic", url), None).run([request("anthropic", "shape")], Answer)
    body = fake.last_body
    assert body["system"] == [
        {"type": "text", "text": "You answer in JSON.", "cache_control": {"type": "ephemeral"}}
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "Answer"}
    assert body["tools"][0]["input_schema"] == Answer.model_json_schema()
    assert body["temperature"] == 0.0 and body["max_tokens"] == 50


@pytest.mark.parametrize("kind", ["openai", "openai-sdk"])
def test_reasoning_models_get_max_completion_tokens_and_no_sampling(
    server: tuple[FakeLLMServer, str], kind: str
) -> None:
    fake, url = server
    runner = make_runner(make_provider(kind, url), None)
    for model, reasoning in (("o4-mini", True), ("gpt-5-mini", True), ("gpt-4o-mini", False)):
        assert runner.run([request("openai", f"tokens {model}", model=model)], Answer).responses[0].status == "ok"
        body = fake.last_body
        if reasoning:
            assert body["max_completion_tokens"] == 50
            assert not {"max_tokens", "temperature", "top_p"} & set(body), model
        else:
            assert body["max_tokens"] == 50 and body["temperature"] == 0.0
            assert "max_completion_tokens" not in body


def test_requests_per_minute_are_paced(server: tuple[FakeLLMServer, str]) -> None:
    _, url = server
    limits = {"openai": ProviderLimits(rpm=1200)}  # 20 a second, bursts of at most 20
    runner = make_runner(make_provider("openai", url), None, concurrency=32, limits=limits)
    started = time.perf_counter()
    result = runner.run([request("openai", f"paced {i}") for i in range(40)], Answer)
    assert result.summary.succeeded == 40
    assert 0.9 <= time.perf_counter() - started < 3.0


def test_sync_entry_point_works_in_threads_and_under_a_running_loop(
    server: tuple[FakeLLMServer, str],
) -> None:
    _, url = server
    runner = make_runner(make_provider("openai", url), None)
    outcome: list[str] = []
    thread = threading.Thread(
        target=lambda: outcome.append(
            runner.run([request("openai", "t")], Answer).responses[0].status
        )
    )
    thread.start()
    thread.join()

    async def inside_a_loop() -> str:
        return runner.run([request("openai", "l")], Answer).responses[0].status

    assert outcome == ["ok"] and asyncio.run(inside_a_loop()) == "ok"


def test_cached_tokens_are_recorded_and_priced(server: tuple[FakeLLMServer, str]) -> None:
    _, url = server
    for kind, name in (("openai", "openai"), ("anthropic", "anthropic")):
        runner = make_runner(make_provider(kind, url), None)
        response = runner.run([request(name, "x" * 400 + " script=okc")], Answer).responses[0]
        price = runner.prices.price_for(name, request(name, "").model)
        assert response.tokens_cached == response.tokens_in // 2 > 0
        assert response.cost_usd == pytest.approx(
            price.cost(response.tokens_in, response.tokens_out, response.tokens_cached)
        )
        assert response.cost_usd < price.cost(response.tokens_in, response.tokens_out)


@pytest.mark.parametrize("kind", ["openai", "openai-sdk", "anthropic"])
def test_connection_errors_are_retried_then_recorded(kind: str) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    name = "anthropic" if kind == "anthropic" else "openai"
    response = make_runner(make_provider(kind, url), None).run([request(name, "q")]).responses[0]
    assert (response.status, response.error_kind, response.attempts) == ("failed", "connection", 3)
    assert "gave up after 3 attempts" in response.error


def test_timeouts_per_provider_with_a_long_default_for_the_embedded_model() -> None:
    defaults = RunnerConfig.from_env({})
    assert (defaults.timeout_for("local"), defaults.timeout_for("openai")) == (600.0, 60.0)
    tuned = RunnerConfig.from_env({"MIKO_LOCAL_TIMEOUT_S": "30", "MIKO_LLM_TIMEOUT_S": "20", "MIKO_LOCAL_CONCURRENCY": "2"})
    assert (tuned.timeout_for("local"), tuned.timeout_for("openai"), tuned.concurrency_for("local")) == (30.0, 20.0, 2)


def test_a_provider_that_ignores_its_timeout_is_cut_off_by_the_runner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Providers that do not declare `enforces_timeout` get the runner's timer; the aiohttp
    transport, which bounds each request itself, does not (its timeouts are in FAULTS)."""

    class Hanging:
        name = "openai"

        async def send(self, request: LLMRequest, timeout_s: float) -> ProviderReply:
            await asyncio.sleep(60)
            raise AssertionError("never answered")

        async def aclose(self) -> None:
            pass

    monkeypatch.setattr(retries, "TIMEOUT_GRACE_S", 0.1)
    started = time.perf_counter()
    response = make_runner(Hanging(), None, max_attempts=2).run([request("openai", "q")]).responses[0]
    assert (response.status, response.error_kind, response.attempts) == ("failed", "timeout", 2)
    assert time.perf_counter() - started < 5
    assert make_provider("openai", "http://127.0.0.1:1").enforces_timeout
    assert not make_provider("openai-sdk", "http://127.0.0.1:1").enforces_timeout
