"""Helpers shared by the dataset loaders: decoding, splits, names, images, labels.

Files are decoded with `surrogateescape`, so bytes that are not valid UTF-8 survive
parsing and are only replaced (with U+FFFD) in the record they belong to; that record
then carries a `text_error` instead of the whole file failing.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from miko_assets.datasets.post import Post, make_post_id

SPLIT_WORDS = ("train", "valid", "val", "dev", "test")
DEFAULT_SPLIT = "all"

_BOM = b"\xef\xbb\xbf"
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
_DATASET_NAME = re.compile(r"[a-z0-9_]+")


class Line(NamedTuple):
    """One line of a text file: 1-based number, best-effort text, decoding problem if any."""

    number: int
    text: str
    error: str | None


class CsvRow(NamedTuple):
    """One CSV record: 1-based data row number, cells by header, decoding problem if any."""

    number: int
    cells: dict[str, str]
    error: str | None


def read_text(path: Path) -> str:
    """Read a whole file as UTF-8, keeping undecodable bytes as escape surrogates."""
    data = path.read_bytes()
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    return data.decode("utf-8", errors="surrogateescape")


def repair(text: str) -> tuple[str, int]:
    """Replace escaped undecodable bytes with U+FFFD; return the text and how many there were."""
    bad = len(_ESCAPED_BYTE.findall(text))
    if not bad:
        return text, 0
    return text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace"), bad


def utf8_error(bad_bytes: int, where: str) -> str:
    return f"not valid UTF-8: {bad_bytes} undecodable byte(s) in {where}, replaced with U+FFFD"


def iter_lines(path: Path) -> Iterator[Line]:
    """Yield every line of a file (blank ones included), each decoded on its own."""
    # Split on "\n" only: str.splitlines() would also break on U+2028 and friends inside tweets.
    for number, raw in enumerate(read_text(path).split("\n"), start=1):
        text, bad = repair(raw.removesuffix("\r"))
        yield Line(number, text, utf8_error(bad, f"line {number}") if bad else None)


def iter_csv(path: Path) -> Iterator[CsvRow]:
    """Yield the data rows of a CSV file with a header row, keyed by header names."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    header = [repair(name)[0] for name in next(reader, [])]
    for number, values in enumerate(reader, start=1):
        if not any(values):
            continue
        cells: dict[str, str] = {}
        broken: list[str] = []
        bad_bytes = 0
        # A short row simply lacks its last columns.
        for name, value in zip(header, values, strict=False):
            cells[name], bad = repair(value)
            if bad:
                broken.append(name or "<unnamed>")
                bad_bytes += bad
        where = f"row {number}, column(s) {', '.join(broken)}"
        error = utf8_error(bad_bytes, where) if broken else None
        # A cell count above the header's is kept rather than silently dropped.
        for extra, value in enumerate(values[len(header) :], start=len(header)):
            cells[f"column_{extra}"] = repair(value)[0]
        yield CsvRow(number, cells, error)


def infer_split(path: Path) -> str:
    """The first word of the file name that names a split (`valid2_sample.txt` -> valid), else "all"."""
    words: list[str] = re.findall(r"[a-z]+", path.name.lower())
    return next((word for word in words if word in SPLIT_WORDS), DEFAULT_SPLIT)


def resolve_split(split: str | None, path: Path) -> str:
    return split if split is not None else infer_split(path)


def dataset_name_from_path(path: Path) -> str:
    """The file stem lowercased and reduced to `[a-z0-9_]` (partition keys allow little else)."""
    name = re.sub(r"_+", "_", re.sub(r"[^a-z0-9_]", "_", path.stem.lower())).strip("_")
    if not name:
        raise ValueError(f"cannot derive a dataset name from {path.name!r}; rename the file")
    return name


def is_dataset_name(name: str) -> bool:
    return _DATASET_NAME.fullmatch(name) is not None


def check_dataset_name(name: str) -> str:
    if not is_dataset_name(name):
        raise ValueError(f"dataset name {name!r} must match [a-z0-9_]+")
    return name


def image_fields(images_dir: Path | None, name: str) -> dict[str, str | None]:
    """`image_path` (the name joined to `images_dir`) and `image_root` (the folder) of a post.

    Nothing is checked or opened here: the posts asset confines the path to the folder,
    verifies the image and records a reason for any that is refused.
    """
    if images_dir is None:
        return {"image_path": None, "image_root": None}
    root = images_dir.absolute()
    return {"image_path": str(root / name), "image_root": str(root)}


def parse_flag(value: Any) -> int | None:
    """A 0/1 label from an int, bool or numeric string; empty or None gives None.

    Raises ValueError for anything else (including numbers other than 0 and 1).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        return int(value)
    number = float(value) if isinstance(value, str) else value
    if number not in (0, 1):
        raise ValueError(f"expected a 0/1 label, got {value!r}")
    return int(number)


def new_post(dataset: str, split: str, source_id: str, text: str, **fields: Any) -> Post:
    """A Post with its stable id derived from dataset and source id."""
    return Post(
        post_id=make_post_id(dataset, source_id),
        dataset=dataset,
        split=split,
        source_id=source_id,
        text=text,
        **fields,
    )
