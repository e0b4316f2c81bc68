"""Missing values as rows read into pandas carry them: None, or NaN in a float column."""

from __future__ import annotations

from typing import Any


def is_missing(value: Any) -> bool:
    """True for None and NaN."""
    return value is None or (isinstance(value, float) and value != value)


def present(value: Any) -> Any:
    """The value, or None when it is missing."""
    return None if is_missing(value) else value
