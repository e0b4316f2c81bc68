"""Small builders for materialization metadata shared by every asset."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import dagster as dg
import pandas as pd

from miko_assets.missing import is_missing


def preview(frame: pd.DataFrame, columns: Sequence[str], rows: int = 10, width: int = 80) -> dg.MetadataValue:
    """A Markdown table of the first rows, long cells shortened."""
    if frame.empty:
        return dg.MetadataValue.md("_no rows_")
    cols = [c for c in columns if c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for record in frame[cols].head(rows).to_dict("records"):
        cells = [_cell(record[c], width) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def whole_table(frame: pd.DataFrame) -> dg.MetadataValue:
    """Every row and column of the frame as a Markdown table, numbers rounded."""
    return preview(frame.round(3), list(frame.columns), rows=len(frame))


def png_image(png: bytes, alt: str) -> dg.MetadataValue:
    """A PNG plot embedded in Markdown metadata (the UI shows it inline)."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def counts(frame: pd.DataFrame, column: str) -> dict[str, int]:
    if frame.empty or column not in frame.columns:
        return {}
    return {str(k): int(v) for k, v in frame[column].fillna("none").value_counts().items()}


def _cell(value: object, width: int) -> str:
    text = "" if is_missing(value) else str(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"
