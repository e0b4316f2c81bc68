"""iSarcasmEval (SemEval-2022 Task 6), English CSV files.

Training format: `,tweet,sarcastic,rephrase,sarcasm,irony,satire,understatement,
overstatement,rhetorical_question`, the unnamed first column being the row id. The
subtype flags are set only on sarcastic rows (empty cells become None), and `rephrase`
is the author's own non-sarcastic wording. Task A test format: `text,sarcastic`, without
an id column, so its rows are numbered `<split>-<0-based row>`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from miko_assets.datasets.common import iter_csv, new_post, parse_flag, resolve_split
from miko_assets.datasets.post import Post

DATASET = "isarcasmeval"
ID_COLUMN = ""
TEXT_COLUMNS = ("tweet", "text")
LABEL_COLUMN = "sarcastic"
REPHRASE_COLUMN = "rephrase"
SUBTYPE_COLUMNS = ("sarcasm", "irony", "satire", "understatement", "overstatement", "rhetorical_question")
_KNOWN = {ID_COLUMN, *TEXT_COLUMNS, LABEL_COLUMN, REPHRASE_COLUMN, *SUBTYPE_COLUMNS}


def load_isarcasmeval(path: Path, *, split: str | None = None, images_dir: Path | None = None) -> Iterator[Post]:
    """Yield the tweets of an iSarcasmEval CSV file (text-only: `images_dir` is ignored)."""
    split = resolve_split(split, path)
    for row in iter_csv(path):
        cells = row.cells
        text_column = next((name for name in TEXT_COLUMNS if name in cells), None)
        if text_column is None or LABEL_COLUMN not in cells:
            raise ValueError(f"{path}: expected a `tweet` or `text` column and a `{LABEL_COLUMN}` column")
        source_id = cells[ID_COLUMN] if ID_COLUMN in cells else f"{split}-{row.number - 1}"
        try:
            label = parse_flag(cells[LABEL_COLUMN])
            labels = {name: parse_flag(cells[name]) for name in SUBTYPE_COLUMNS if name in cells}
        except ValueError as error:
            raise ValueError(f"{path}: row {row.number}: {error}") from error
        metadata: dict[str, object] = {name: value for name, value in cells.items() if name not in _KNOWN}
        if REPHRASE_COLUMN in cells:
            metadata[REPHRASE_COLUMN] = cells[REPHRASE_COLUMN] or None
        yield new_post(
            DATASET,
            split,
            source_id,
            cells[text_column],
            text_error=row.error,
            label=label,
            labels=labels,
            metadata=metadata,
        )
