"""Image paths that come from data stay inside their image folder.

A dataset row names its image; that name is joined to the folder given at ingest (or the
data file's folder). Whatever the name says, the file read must lie inside that folder:
`..` components, absolute paths elsewhere, symlinks pointing out and anything that is not
a regular file are refused with a reason before the file is opened.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePath


class UnsafeImagePath(Exception):
    """An image path that leaves its folder or names something other than a regular file."""


def confined_path(path: str | Path, root: str | Path | None) -> Path:
    """`path` with symlinks resolved, if it names a regular file inside `root`.

    A relative `path` is taken relative to `root`. Without a `root` (rows ingested before
    the folder was recorded) the path's own folder is the root. Raises `UnsafeImagePath`
    (or `FileNotFoundError` for a missing file) with the reason.
    """
    given = Path(path)
    if root is None and ".." in given.parts:
        raise UnsafeImagePath(f"image path {path} contains '..'")
    folder = Path(root) if root is not None else given.parent
    joined = given if given.is_absolute() else folder / given
    try:
        inside = PurePath(joined).relative_to(folder)
    except ValueError:
        raise UnsafeImagePath(f"image path {path} is outside the image folder {folder}") from None
    if ".." in inside.parts:
        raise UnsafeImagePath(f"image path {path} leaves the image folder {folder} through '..'")
    resolved, folder_resolved = joined.resolve(), folder.resolve()
    if not resolved.is_relative_to(folder_resolved):
        raise UnsafeImagePath(
            f"image path {path} is a symlink to {resolved}, outside the image folder {folder}"
        )
    mode = os.stat(resolved).st_mode  # FileNotFoundError for a missing file
    if not stat.S_ISREG(mode):
        raise UnsafeImagePath(f"image path {path} is not a regular file ({_kind(mode)})")
    return resolved


def read_confined(path: str | Path, root: str | Path | None) -> bytes:
    """The bytes of a regular file inside `root` (see `confined_path`), opened without following links."""
    resolved = confined_path(path, root)
    # O_NOFOLLOW and the fstat below close the gap between the checks and the open: a file
    # swapped for a link or a FIFO meanwhile is refused, and O_NONBLOCK keeps a FIFO from hanging.
    fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise UnsafeImagePath(f"image path {path} is not a regular file ({_kind(mode)})")
        return handle.read()


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"
