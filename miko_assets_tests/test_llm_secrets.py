"""API keys never show in logs, errors, rows, summaries or reprs, even when a server echoes them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from miko_assets.devtools.fake_llm_server import FakeLLMServer
from miko_assets.llm.provider_registry import (
    ProviderConfigError,
    ProviderRegistry,
    build_provider,
)
from miko_assets.llm.runner import LLMRunner
from miko_assets.warehouse.warehouse import Warehouse
from miko_assets_tests.conftest import Answer, make_runner, request

SECRET = "TOPSECRET0123456789"
OPENAI_KEY = f"sk-live-{SECRET}"
ANTHROPIC_KEY = f"sk-ant-api03-{SECRET}"


@pytest.mark.parametrize("transport", ["aiohttp", "sdk"])
def test_keys_stay_out_of_logs_rows_errors_and_reprs(
    transport: str,
    server: tuple[FakeLLMServer, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = server[1]
    caplog.set_level(logging.DEBUG)  # every logger, the SDKs' and HTTP clients' included
    env = {
        "OPENAI_API_KEY": OPENAI_KEY,
        "MIKO_OPENAI_BASE_URL": f"{url}/v1",
        "MIKO_OPENAI_TRANSPORT": transport,
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "ANTHROPIC_BASE_URL": url,
    }
    registry = ProviderRegistry(env)
    warehouse = Warehouse(tmp_path / "w.duckdb")
    runner = LLMRunner(
        registry, warehouse, config=make_runner(registry.get("openai"), None, max_attempts=2).config
    )
    # The 401 bodies echo the key they received, as some servers do.
    requests = [
        request(p, f"{p} {s} script={s}")
        for p in ("openai", "anthropic")
        for s in ("401", "500", "ok")
    ]

    result = runner.run(requests, Answer, dagster_run_id="run", stage="secrets")

    assert [r.error_kind for r in result.responses] == ["auth", "server_error", None] * 2
    assert "***" in result.responses[0].error and "***" in result.responses[3].error
    stored = warehouse.query("SELECT * FROM llm_calls").to_csv()
    visible = [
        caplog.text,
        stored,
        repr(result),
        str(result.summary.as_metadata()),
        repr(registry.get("openai")),
        repr(registry.get("anthropic")),
        repr(registry.get("openai").settings),
        repr(runner),
    ]
    assert len(caplog.records) > 0
    for text in visible:
        assert SECRET not in text


def test_missing_keys_fail_fast_without_showing_other_secrets() -> None:
    with pytest.raises(ProviderConfigError, match="OPENAI_API_KEY") as openai_error:
        build_provider("openai", {"ANTHROPIC_API_KEY": ANTHROPIC_KEY})
    with pytest.raises(ProviderConfigError, match="ANTHROPIC_API_KEY"):
        build_provider("anthropic", {"OPENAI_API_KEY": OPENAI_KEY})
    with pytest.raises(ProviderConfigError, match="unknown provider"):
        build_provider("mystery", {})
    assert SECRET not in str(openai_error.value)
    # A local OpenAI-compatible server needs no key at all.
    local = build_provider("openai", {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert "127.0.0.1:9" in repr(local)
