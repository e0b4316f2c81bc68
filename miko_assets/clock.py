"""The one clock: every stored timestamp is naive UTC, as the warehouse's TIMESTAMP columns hold it."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """Now in UTC, without tzinfo (what a TIMESTAMP column stores)."""
    return datetime.now(UTC).replace(tzinfo=None)
