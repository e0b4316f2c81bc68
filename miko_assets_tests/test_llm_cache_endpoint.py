"""The call cache keys OpenAI-compatible calls by their endpoint (issue 15, item 5)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from pydantic import BaseModel

from miko_assets.devtools.fake_llm_server import FakeLLMServer
from miko_assets.distill.config import build_request, stage_config
from miko_assets.clock import utc_now
from miko_assets.llm.cache import LLMCallCache
from miko_assets.llm.config import RunnerConfig
from miko_assets.llm.endpoints import normalize_endpoint
from miko_assets.llm.models import canonical_json, sha256_text
from miko_assets.llm.provider_registry import ProviderRegistry
from miko_assets.llm.runner import LLMRunner
from miko_assets.warehouse.warehouse import Warehouse

FAST = RunnerConfig(timeout_s=5, max_attempts=1, flush_interval_s=0.1)


class Judged(BaseModel):
    model_config = {"extra": "allow"}


@pytest.fixture
def two_servers() -> Iterator[tuple[FakeLLMServer, str, FakeLLMServer, str]]:
    first, second = FakeLLMServer(), FakeLLMServer()
    urls = first.start_in_thread(), second.start_in_thread()
    yield first, urls[0], second, urls[1]
    first.stop()
    second.stop()


def _env(url: str) -> dict[str, str]:
    return {
        "MIKO_OPENAI_BASE_URL": f"{url}/v1/",
        "MIKO_KEY_INFO_PROVIDER": "openai",
        "MIKO_KEY_INFO_MODEL": "same-name-other-weights",
        "MIKO_KEY_INFO_PROMPT_VERSION": "v2",
    }


def _requests(env: dict[str, str]) -> list:
    config = stage_config("key_info", env)
    prompt = config.prompt()
    fields = {name: "script=fill" for name in prompt.placeholders}
    schema = {"type": "object", "properties": {"concept": {"type": "string"}}}
    return [build_request(config, prompt, {**fields, "text": f"post {i} script=fill"}, output_schema=schema)
            for i in range(3)]


def test_normalize_endpoint() -> None:
    assert normalize_endpoint("HTTP://LocalHost:80/v1/") == "http://localhost/v1"
    assert normalize_endpoint("https://api.openai.com:443/v1") == "https://api.openai.com/v1"
    assert normalize_endpoint("http://127.0.0.1:8000/v1//") == "http://127.0.0.1:8000/v1"
    assert normalize_endpoint("http://[::1]:9000/V1") == "http://[::1]:9000/V1"


def test_two_servers_with_one_model_name_do_not_share_answers(
    tmp_path: Path, two_servers: tuple[FakeLLMServer, str, FakeLLMServer, str]
) -> None:
    first, first_url, second, second_url = two_servers
    wh = Warehouse(tmp_path / "w.duckdb")
    for fake, url in ((first, first_url), (second, second_url)):
        env = _env(url)
        requests = _requests(env)
        assert requests[0].endpoint == normalize_endpoint(f"{url}/v1")
        result = LLMRunner(ProviderRegistry(env), wh, config=FAST).run(requests, Judged)
        assert result.summary.cache_hits == 0 and result.summary.calls_made == 3
        assert fake.requests == 3
    again = LLMRunner(ProviderRegistry(_env(second_url)), wh, config=FAST).run(_requests(_env(second_url)), Judged)
    assert again.summary.cache_hits == 3 and second.requests == 3
    endpoints = wh.rows("SELECT endpoint, count(*) FROM llm_calls GROUP BY endpoint ORDER BY endpoint")
    assert endpoints == sorted([(normalize_endpoint(f"{u}/v1"), 3) for u in (first_url, second_url)])


def test_rows_cached_before_endpoints_are_keyed_by_the_configured_endpoint(
    tmp_path: Path, two_servers: tuple[FakeLLMServer, str, FakeLLMServer, str]
) -> None:
    fake, url, _, _ = two_servers
    env = _env(url)
    requests = _requests(env)
    wh = Warehouse(tmp_path / "w.duckdb")
    cache = LLMCallCache(wh)
    wh.ensure_schema()
    # What an earlier version stored: keys and request JSON without the endpoint.
    legacy = []
    for i, request in enumerate(requests):
        old_json = canonical_json({k: v for k, v in json.loads(request.request_json()).items() if k != "endpoint"})
        legacy.append(sha256_text(old_json))
        wh.execute(
            "INSERT INTO llm_calls (call_id, provider, model, request_json, response_text, status, tokens_in, "
            "tokens_out, tokens_cached, cost_usd, latency_ms, attempts, created_at) "
            "VALUES (?, 'openai', ?, ?, ?, 'ok', 10, 5, 0, 0.01, 1.0, 1, ?)",
            [legacy[-1], request.model, old_json, json.dumps({"concept": f"old answer {i}"}), utc_now()],
        )
    wh.append("intentions", pd.DataFrame([{"batch": "b", "post_id": "p", "llm_call_id": legacy[0]}]))
    wh.append("llm_batch_items", pd.DataFrame([{"batch_id": "x", "call_id": legacy[1], "request_json": "{}"}]))

    result = LLMRunner(ProviderRegistry(env), wh, config=FAST).run(requests, Judged)

    assert result.summary.cache_hits == 3 and fake.requests == 0, "the migrated rows are served"
    assert [r.parsed.model_extra["concept"] for r in result.responses] == ["old answer 0", "old answer 1", "old answer 2"]
    new_ids = [r.cache_key() for r in requests]
    assert [r.call_id for r in result.responses] == new_ids
    assert wh.rows("SELECT llm_call_id FROM intentions") == [(new_ids[0],)]
    assert wh.rows("SELECT call_id, json_extract_string(request_json, '$.endpoint') FROM llm_batch_items") == [
        (new_ids[1], requests[1].endpoint)
    ]
    assert wh.rows("SELECT count(*) FROM llm_calls WHERE endpoint IS NULL") == [(0,)]
    assert cache.key_unkeyed_endpoint_rows("http://elsewhere/v1") == 0, "done once"


def test_providers_without_an_endpoint_keep_their_keys() -> None:
    config = stage_config("key_info", {})
    assert config.provider == "local" and config.endpoint is None
    prompt = config.prompt()
    request = build_request(config, prompt, {name: "x" for name in prompt.placeholders})
    assert "endpoint" not in json.loads(request.request_json())
