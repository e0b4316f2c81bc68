"""What the LLM tests share: the fault-injecting fake server, a warehouse, and runners and
requests set up for it (short timeouts and backoff, so faults play out in milliseconds)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr

from miko_assets.devtools.fake_llm_server import FakeLLMServer
from miko_assets.devtools.servers import postgres_server
from miko_assets.llm.anthropic_provider import AnthropicProvider, AnthropicSettings
from miko_assets.llm.config import RunnerConfig
from miko_assets.llm.models import GenerationParams, LLMRequest, Message
from miko_assets.llm.openai_provider import OpenAIProvider, OpenAISettings
from miko_assets.llm.provider_interface import Provider
from miko_assets.llm.provider_registry import ProviderRegistry
from miko_assets.llm.runner import LLMRunner
from miko_assets.warehouse.location import parse_location
from miko_assets.warehouse.warehouse import Warehouse

OPENAI_KEY = "sk-test-openai-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-test-0123456789abcdef"
KEY_SECRET = "ENVSECRET0123456789"
"""Part of both keys `provider_env` sets: tests check it shows nowhere."""


class Answer(BaseModel):
    """The structured answer the fake server gives (`{"answer": ...}`)."""

    answer: str


@pytest.fixture
def server() -> Iterator[tuple[FakeLLMServer, str]]:
    """The fake server in a thread of this process, and its base URL."""
    fake = FakeLLMServer()
    url = fake.start_in_thread()
    yield fake, url
    fake.stop()


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path / "w.duckdb")


def lake_warehouse(folder: Path, name: str = "lake") -> Warehouse:
    """A DuckLake warehouse in `folder`: a SQLite catalog and a local data path."""
    return Warehouse(parse_location(f"ducklake:sqlite:{folder / f'{name}.sqlite'}", str(folder / f"{name}_data")))


@contextmanager
def lake_catalog(kind: str, folder: Path) -> Iterator[str]:
    """A `ducklake:` URL whose catalog is a SQLite file (`kind` "sqlite") or a database in a real
    Postgres server (`kind` "postgres") run in `folder` for the block."""
    if kind == "sqlite":
        yield f"ducklake:sqlite:{folder / 'catalog.sqlite'}"
        return
    with postgres_server(folder / "postgres") as pg:
        pg.create_database("lake")
        yield f"ducklake:postgres:{pg.dsn('lake')}"


def provider_env(url: str) -> dict[str, str]:
    """An environment whose `openai` and `anthropic` providers call the fake at `url`."""
    return {
        "OPENAI_API_KEY": f"sk-live-{KEY_SECRET}",
        "MIKO_OPENAI_BASE_URL": f"{url}/v1",
        "ANTHROPIC_API_KEY": f"sk-ant-api03-{KEY_SECRET}",
        "ANTHROPIC_BASE_URL": url,
    }


def make_provider(kind: str, url: str, key: str | None = None) -> Provider:
    """`openai` (aiohttp transport), `openai-sdk` or `anthropic`, pointed at the fake at `url`."""
    if kind == "anthropic":
        return AnthropicProvider(
            AnthropicSettings(api_key=SecretStr(key or ANTHROPIC_KEY), base_url=url)
        )
    transport = "sdk" if kind == "openai-sdk" else "aiohttp"
    return OpenAIProvider(
        OpenAISettings(
            base_url=f"{url}/v1", api_key=SecretStr(key or OPENAI_KEY), transport=transport
        )
    )


def make_runner(provider: Provider, warehouse: Warehouse | None, **config: object) -> LLMRunner:
    """A runner with test timings (0.3 s timeout, 3 attempts, ms backoff); `config` overrides."""
    settings = {
        "timeout_s": 0.3,
        "max_attempts": 3,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "flush_interval_s": 0.1,
        "concurrency": 8,
    }
    settings.update(config)
    return LLMRunner(
        ProviderRegistry(env={}, providers=[provider]), warehouse, config=RunnerConfig(**settings)
    )


def request(provider: str, text: str, schema: bool = True, model: str | None = None) -> LLMRequest:
    """A two-message request; with `schema` it asks for an `Answer`."""
    return LLMRequest(
        provider=provider,
        model=model or ("claude-3-5-haiku" if provider == "anthropic" else "gpt-4o-mini"),
        messages=(
            Message(role="system", content="You answer in JSON."),
            Message(role="user", content=text),
        ),
        params=GenerationParams(temperature=0.0, max_tokens=50),
        output_schema=Answer.model_json_schema() if schema else None,
        schema_name="Answer" if schema else None,
    )


# What `miko` must not load for a command that does not use it: Dagster and the asset
# definitions (seconds of imports, and settings the command does not read), the LLM SDKs.
HEAVY_MODULES = ("dagster", "miko_assets.definitions", "miko_assets.assets", "miko_assets.resources",
                 "anthropic", "openai", "llama_cpp")
_RUN_MIKO = """
import json, sys
from miko_assets.cli import main
codes = []
for argv in json.loads(sys.argv[1]):
    try:
        codes.append(main(argv))
    except SystemExit as exit:
        codes.append(exit.code)
print("\\nMODULES " + json.dumps({"codes": codes, "modules": sorted(sys.modules)}))
"""


def miko_imports(argvs: list[list[str]], cwd: Path, env: dict[str, str] | None = None) -> tuple[list[int], set[str], str]:
    """Run `miko` with each argv in turn in one fresh interpreter: (exit codes, every module it
    imported, what it printed)."""
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _RUN_MIKO, json.dumps(argvs)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=True)
    printed, _, report = proc.stdout.rpartition("\nMODULES ")
    found = json.loads(report)
    return found["codes"], set(found["modules"]), printed + proc.stderr
