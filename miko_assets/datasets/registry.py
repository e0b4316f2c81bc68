"""Every dataset format by name, behind one loader signature."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Protocol

from miko_assets.datasets.generic import load_csv, load_jsonl
from miko_assets.datasets.isarcasm import load_isarcasmeval
from miko_assets.datasets.miko_release import load_miko_release
from miko_assets.datasets.mmsd import load_mmsd
from miko_assets.datasets.mmsd2 import load_mmsd2
from miko_assets.datasets.post import Post
from miko_assets.datasets.twitter import load_twitter


class Loader(Protocol):
    def __call__(self, path: Path, *, split: str | None = None, images_dir: Path | None = None) -> Iterator[Post]: ...


LOADERS: dict[str, Loader] = {
    "mmsd": load_mmsd,
    "mmsd2": load_mmsd2,
    "twitter2015": partial(load_twitter, dataset="twitter2015"),
    "twitter2017": partial(load_twitter, dataset="twitter2017"),
    "isarcasmeval": load_isarcasmeval,
    "miko_release": load_miko_release,
    "jsonl": load_jsonl,
    "csv": load_csv,
}


def load_posts(
    format: str,
    path: Path | str,
    split: str | None = None,
    images_dir: Path | str | None = None,
) -> Iterator[Post]:
    """Load the posts of `path` with the loader registered for `format`.

    `split` defaults to the split named in the file name, else "all".
    """
    if format not in LOADERS:
        raise ValueError(f"unknown dataset format {format!r}; known formats: {', '.join(sorted(LOADERS))}")
    images = Path(images_dir) if images_dir is not None else None
    return LOADERS[format](Path(path), split=split, images_dir=images)
