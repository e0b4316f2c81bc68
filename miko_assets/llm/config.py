"""Runner settings (concurrency, limits, retries, budget), read from the environment.

MIKO_LLM_CONCURRENCY          calls in flight per provider (default 16)
MIKO_<PROVIDER>_CONCURRENCY   the same for one provider (`local`: its model contexts, one per
                              core by default, at most 4)
MIKO_<PROVIDER>_RPM / _TPM    requests / tokens per minute for one provider (default: none)
MIKO_LLM_TIMEOUT_S            per-attempt timeout (default 60)
MIKO_<PROVIDER>_TIMEOUT_S     the same for one provider (`local` defaults to 600: a small CPU
                              model writes a few hundred tokens in minutes when cores are busy)
MIKO_LLM_MAX_ATTEMPTS         attempts per call, retries included (default 5)
MIKO_MAX_SPEND_USD            cap on the spend of one budget (default: none); the runs of one
                              backfill share a budget, a run outside a backfill has its own
MIKO_BUDGET_NAME              one budget for every run given this name, in any process or
                              backfill, instead of the backfill's or the run's
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from miko_assets.cpu_lock import default_slots
from miko_assets.env_values import EnvValueError, env_number

BUDGET_NAME_VAR = "MIKO_BUDGET_NAME"
_LIMIT_VAR = re.compile(r"^MIKO_([A-Z0-9]+)_(CONCURRENCY|RPM|TPM|TIMEOUT_S)$")


class ProviderLimits(BaseModel):
    """Per-provider bounds; `None` means that dimension is unlimited."""

    model_config = ConfigDict(frozen=True)

    concurrency: int | None = Field(default=None, ge=1)
    rpm: float | None = Field(default=None, gt=0)
    tpm: float | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)


# The embedded model answers as many calls at once as it has contexts: more workers would only
# queue on them (and spend their timeouts waiting). Its generation is deterministic work on the
# CPU, so a short timeout only makes retries repeat the same work.
DEFAULT_LIMITS = {"local": ProviderLimits(concurrency=default_slots(), timeout_s=600.0)}
_NO_LIMITS = ProviderLimits()


class RunnerConfig(BaseModel):
    """How `LLMRunner` runs a batch."""

    model_config = ConfigDict(frozen=True)

    concurrency: int = Field(default=16, ge=1)
    # Per provider; a provider without an entry takes `DEFAULT_LIMITS`, else no limits.
    limits: dict[str, ProviderLimits] = Field(default_factory=dict)
    timeout_s: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=5, ge=1)
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=30.0, ge=0)
    # A Retry-After longer than this is not waited for inside a step: the call fails instead.
    max_retry_after_s: float = Field(default=120.0, ge=0)
    max_spend_usd: float | None = Field(default=None, ge=0)
    budget_name: str | None = None
    repair: bool = True
    # Each flush opens the warehouse (tens of ms), so batches are large; at most about
    # `flush_interval_s` of finished results is lost if the process dies.
    flush_every: int = Field(default=1000, ge=1)
    flush_interval_s: float = Field(default=1.0, gt=0)

    def limits_for(self, provider: str) -> ProviderLimits:
        return self.limits.get(provider) or DEFAULT_LIMITS.get(provider) or _NO_LIMITS

    def concurrency_for(self, provider: str) -> int:
        return self.limits_for(provider).concurrency or self.concurrency

    def timeout_for(self, provider: str) -> float:
        return self.limits_for(provider).timeout_s or self.timeout_s

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> RunnerConfig:
        """Defaults overridden by the `MIKO_*` variables listed in this module's docstring."""
        limits = {
            name: dict(limit.model_dump(exclude_none=True))
            for name, limit in DEFAULT_LIMITS.items()
        }
        for name, value in env.items():
            match = _LIMIT_VAR.match(name)
            if match and match.group(1) != "LLM":
                limits.setdefault(match.group(1).lower(), {})[match.group(2).lower()] = env_number(env, name)
        fields: dict[str, object] = {"limits": limits}
        for field, (var, kind) in _RUNNER_VARS.items():
            value = env_number(env, var, kind)
            if value is not None:
                fields[field] = value
        if env.get(BUDGET_NAME_VAR):
            fields["budget_name"] = env[BUDGET_NAME_VAR]
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            raise EnvValueError("; ".join(_explain(error) for error in exc.errors())) from exc


# RunnerConfig field -> (environment variable, number kind)
_RUNNER_VARS: dict[str, tuple[str, type[int] | type[float]]] = {
    "concurrency": ("MIKO_LLM_CONCURRENCY", int),
    "timeout_s": ("MIKO_LLM_TIMEOUT_S", float),
    "max_attempts": ("MIKO_LLM_MAX_ATTEMPTS", int),
    "max_spend_usd": ("MIKO_MAX_SPEND_USD", float),
}


def _explain(error: dict) -> str:
    """The variable behind one validation error of `RunnerConfig.from_env`, and what is wrong."""
    loc = [str(part) for part in error["loc"]]
    var = f"MIKO_{loc[1].upper()}_{loc[2].upper()}" if loc[0] == "limits" else _RUNNER_VARS[loc[0]][0]
    return f"{var}: {error['msg'].lower()}: change or unset it"
