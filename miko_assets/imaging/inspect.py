"""Open, verify and orient an image file; report what is wrong with it in plain words."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel

from miko_assets.imaging.confine import UnsafeImagePath, read_confined

# Social-media images are a few megapixels; anything far beyond is a decompression bomb or junk.
MAX_PIXELS = 64_000_000


class ImageError(Exception):
    """An image that cannot be used; the message says why, in words fit for a stored row."""


class ImageInfo(BaseModel):
    """What `inspect_image` found. `ok=False` rows carry the reason in `error`."""

    path: str
    ok: bool
    error: str | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    mode: str | None = None


@dataclass(frozen=True)
class LoadedImage:
    """A verified, fully decoded, EXIF-oriented image and the sha256 of its file bytes."""

    image: Image.Image
    sha256: str
    format: str | None


def load_image(
    path: str | Path, root: str | Path | None = None, max_pixels: int = MAX_PIXELS
) -> LoadedImage:
    """Read, verify, decode and orient an image; raise `ImageError` with the reason on failure.

    The file must be a regular file inside `root` (the image folder of its post; by default
    its own folder), see `confined_path`: an image path from data never reads anything else.
    """
    p = Path(path)
    try:
        data = read_confined(p, root)
    except UnsafeImagePath as exc:
        raise ImageError(str(exc)) from exc
    except FileNotFoundError as exc:
        raise ImageError(f"image file not found: {p}") from exc
    except OSError as exc:
        raise ImageError(f"cannot read image file {p}: {exc.strerror or exc}") from exc
    if not data:
        raise ImageError(f"empty image file: {p}")
    sha = hashlib.sha256(data).hexdigest()

    try:
        with warnings.catch_warnings():
            # Our own MAX_PIXELS check below is stricter than Pillow's warning threshold.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            probe = Image.open(io.BytesIO(data))
        with probe:
            fmt = probe.format
            width, height = probe.size
            if width * height > max_pixels:
                raise ImageError(
                    f"image too large: {width}x{height} pixels exceeds the limit of "
                    f"{max_pixels} ({p})"
                )
            probe.verify()
        # verify() leaves the image unusable and does not decode pixel data, so truncated
        # files only show up on a second open with a full load().
        image = Image.open(io.BytesIO(data))
        image.load()
        oriented = ImageOps.exif_transpose(image)
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError(f"not an image (unrecognised format): {p}") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large (decompression bomb): {p}: {exc}") from exc
    # Pillow's decoders raise a zoo of types for damaged files (OSError, SyntaxError,
    # ValueError, struct.error, EOFError, ...); all of them mean the same thing here.
    except Exception as exc:
        raise ImageError(f"corrupt image: {p}: {type(exc).__name__}: {exc}") from exc
    return LoadedImage(image=oriented, sha256=sha, format=fmt)


def inspect_image(
    path: str | Path, root: str | Path | None = None, max_pixels: int = MAX_PIXELS
) -> ImageInfo:
    """Describe an image file without ever raising: bad input gives `ok=False` and a reason."""
    try:
        loaded = load_image(path, root, max_pixels=max_pixels)
    except ImageError as exc:
        return ImageInfo(path=str(path), ok=False, error=str(exc))
    width, height = loaded.image.size
    return ImageInfo(
        path=str(path),
        ok=True,
        sha256=loaded.sha256,
        width=width,
        height=height,
        format=loaded.format,
        mode=loaded.image.mode,
    )
