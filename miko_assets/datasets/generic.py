"""Generic posts as JSONL (one object per line) or CSV (with a header row).

Recognised fields: `id`, `text`, optional `image` (a file name relative to `images_dir`,
or to the data file's folder when no images dir is given), optional `label` (0/1) and
optional `dataset` (a name in `[a-z0-9_]`). Every other field goes into `metadata`.
Without a `dataset` field the dataset name is the file stem lowercased and reduced to
`[a-z0-9_]` (it ends up in partition keys).

These files are written by users, so a bad row never stops the load:
- bytes that are not UTF-8 are replaced with U+FFFD and the post gets a `text_error`;
- a line that is not a JSON object, or a row without `text`, gets a `text_error` (the raw
  line is kept as its text), so the posts asset rejects it with that reason;
- a row without `id` is kept under the id `line-<n>` (JSONL line number) or `row-<n>`
  (CSV data row number), stable while the file is unchanged; a label that is not 0/1 is
  dropped and an invalid `dataset` falls back to the file's name; all three are noted in
  `metadata["load_warnings"]`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from miko_assets.datasets.common import (
    dataset_name_from_path,
    image_fields,
    is_dataset_name,
    iter_csv,
    iter_lines,
    new_post,
    parse_flag,
    resolve_split,
)
from miko_assets.datasets.post import Post

ID_FIELD = "id"
TEXT_FIELD = "text"
IMAGE_FIELD = "image"
LABEL_FIELD = "label"
DATASET_FIELD = "dataset"
WARNINGS_KEY = "load_warnings"
_FIELDS = {ID_FIELD, TEXT_FIELD, IMAGE_FIELD, LABEL_FIELD, DATASET_FIELD}


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _record_post(
    record: Mapping[str, Any],
    *,
    default_dataset: str,
    split: str,
    fallback_id: str,
    image_root: Path,
    decode_error: str | None,
) -> Post:
    errors = [decode_error] if decode_error else []
    warnings: list[str] = []
    dataset = default_dataset
    named = record.get(DATASET_FIELD)
    if not _blank(named):
        if is_dataset_name(str(named)):
            dataset = str(named)
        else:
            warnings.append(f"`{DATASET_FIELD}` {named!r} is not a [a-z0-9_]+ name; using {dataset!r}")
    raw_id = record.get(ID_FIELD)
    if _blank(raw_id):
        source_id = fallback_id
        warnings.append(f"no `{ID_FIELD}`: source id taken from its position ({fallback_id})")
    else:
        source_id = str(raw_id).strip()
    text = record.get(TEXT_FIELD)
    if text is None:
        errors.append(f"no `{TEXT_FIELD}` field")
    try:
        label = parse_flag(record.get(LABEL_FIELD))
    except (TypeError, ValueError):
        label = None
        warnings.append(f"`{LABEL_FIELD}` {record.get(LABEL_FIELD)!r} is not 0/1 and was dropped")
    image = record.get(IMAGE_FIELD)
    metadata = {key: value for key, value in record.items() if key not in _FIELDS}
    if warnings:
        metadata[WARNINGS_KEY] = warnings
    return new_post(
        dataset,
        split,
        source_id,
        "" if text is None else str(text),
        text_error="; ".join(errors) or None,
        **image_fields(None if _blank(image) else image_root, str(image).strip()),
        label=label,
        metadata=metadata,
    )


def _json_object(text: str, number: int) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON object on a line, or None and the reason it is not one."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return None, f"line {number} is not valid JSON ({error.msg})"
    if not isinstance(value, dict):
        return None, f"line {number} is not a JSON object"
    return value, None


def load_jsonl(path: Path, *, split: str | None = None, images_dir: Path | None = None) -> Iterator[Post]:
    """Yield one post per non-blank line of a JSONL file."""
    dataset, split = dataset_name_from_path(path), resolve_split(split, path)
    image_root = images_dir if images_dir is not None else path.parent
    for line in iter_lines(path):
        if not line.text.strip():
            continue
        fallback_id = f"line-{line.number}"
        record, problem = _json_object(line.text, line.number)
        if record is None:
            errors = "; ".join(filter(None, [line.error, problem]))
            yield new_post(dataset, split, fallback_id, line.text, text_error=errors)
            continue
        yield _record_post(
            record,
            default_dataset=dataset,
            split=split,
            fallback_id=fallback_id,
            image_root=image_root,
            decode_error=line.error,
        )


def load_csv(path: Path, *, split: str | None = None, images_dir: Path | None = None) -> Iterator[Post]:
    """Yield one post per data row of a CSV file with a header row."""
    dataset, split = dataset_name_from_path(path), resolve_split(split, path)
    image_root = images_dir if images_dir is not None else path.parent
    for row in iter_csv(path):
        yield _record_post(
            row.cells,
            default_dataset=dataset,
            split=split,
            fallback_id=f"row-{row.number}",
            image_root=image_root,
            decode_error=row.error,
        )
