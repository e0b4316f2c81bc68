"""Re-encode a verified image for a multimodal API: oriented, RGB, bounded, JPEG."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

from PIL import Image

from miko_assets.imaging.inspect import MAX_PIXELS, load_image
from miko_assets.llm.models import DEFAULT_IMAGE_SIDE, ImageInput

JPEG_QUALITY = 90


def flatten_to_rgb(image: Image.Image) -> Image.Image:
    """RGB version of `image`; transparent areas become white rather than black."""
    if image.mode == "RGB":
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    flat = Image.new("RGB", rgba.size, "white")
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def encode_for_api(
    path: str | Path,
    root: str | Path | None = None,
    max_side: int = DEFAULT_IMAGE_SIDE,
    quality: int = JPEG_QUALITY,
    max_pixels: int = MAX_PIXELS,
) -> ImageInput:
    """Verified, EXIF-oriented RGB JPEG no larger than `max_side` on either side.

    The sha256 is of the encoded bytes (what the model sees), so it is stable across
    re-runs. EXIF and other metadata are dropped. Raises `ImageError` for unusable images
    and for paths outside `root` (see `load_image`).
    """
    image = flatten_to_rgb(load_image(path, root, max_pixels=max_pixels).image)
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    data = buffer.getvalue()
    return ImageInput(
        sha256=hashlib.sha256(data).hexdigest(),
        media_type="image/jpeg",
        data_b64=base64.b64encode(data).decode("ascii"),
        width=image.width,
        height=image.height,
    )
