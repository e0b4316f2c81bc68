"""Numbers read from environment variables, refused with the variable's name when malformed."""

from __future__ import annotations

from collections.abc import Mapping


class EnvValueError(ValueError):
    """An environment variable whose value cannot be used."""


def env_number(env: Mapping[str, str], name: str, kind: type[int | float] = float) -> int | float | None:
    """The variable as a number of `kind`; None when unset or empty."""
    raw = env.get(name)
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        expected = "a whole number" if kind is int else "a number"
        raise EnvValueError(f"{name}={raw!r} is not {expected}: set it to {expected} or unset it") from None
