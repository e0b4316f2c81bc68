"""Image inspection, re-encoding and the offline describer, on real photos and real files."""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont
from skimage import data as skdata

from miko_assets.imaging.describe import (
    NOT_A_CAPTION,
    describe_attribute_words,
    describe_image,
)
from miko_assets.imaging.encode import encode_for_api
from miko_assets.imaging.inspect import ImageError, inspect_image

EXIF_ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("photos")
    paths = {}
    for name in ("coffee", "chelsea"):
        paths[name] = folder / f"{name}.jpg"
        Image.fromarray(getattr(skdata, name)()).save(paths[name], quality=95)
    return paths


def _rgb(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    pixel = image.getpixel(xy)
    assert isinstance(pixel, tuple)
    return pixel


def _decode(encoded_b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(encoded_b64)))
    image.load()
    return image


# --- inspect -----------------------------------------------------------------------------


def test_inspect_reports_a_good_photo(photos: dict[str, Path]) -> None:
    info = inspect_image(photos["coffee"])
    assert info.ok and info.error is None
    assert (info.width, info.height, info.format, info.mode) == (600, 400, "JPEG", "RGB")
    assert info.sha256 == hashlib.sha256(photos["coffee"].read_bytes()).hexdigest()


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored 300 wide x 200 high, left half red; orientation 6 means "rotate 90 degrees clockwise
    # to display", so it displays 200 x 300 with the red half on top.
    stored = Image.new("RGB", (300, 200), "blue")
    stored.paste("red", (0, 0, 150, 200))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif, quality=95)

    info = inspect_image(path)
    assert info.ok
    assert (info.width, info.height) == (200, 300)

    shown = _decode(encode_for_api(path).data_b64)
    assert shown.size == (200, 300)
    top, bottom = _rgb(shown, (100, 20)), _rgb(shown, (100, 280))
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


def test_missing_file(tmp_path: Path) -> None:
    info = inspect_image(tmp_path / "nope.jpg")
    assert not info.ok
    assert info.error == f"image file not found: {tmp_path / 'nope.jpg'}"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file(photos: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    whole = io.BytesIO()
    Image.open(photos["coffee"]).save(whole, format=fmt)
    path = tmp_path / f"truncated.{fmt.lower()}"
    path.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])

    info = inspect_image(path)
    assert not info.ok
    assert info.error is not None and info.error.startswith("corrupt image:"), info.error


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is a text file with an image extension")
    info = inspect_image(path)
    assert not info.ok
    assert info.error == f"not an image (unrecognised format): {path}"


def test_empty_file_and_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert inspect_image(empty).error == f"empty image file: {empty}"
    assert inspect_image(tmp_path).error == f"image path {tmp_path} is not a regular file (a directory)"


@pytest.mark.parametrize("side", [100_000, 9_000])
def test_decompression_bomb_is_refused(tmp_path: Path, side: int) -> None:
    # A real 1x1 PNG whose header then claims side x side pixels: 100000 trips Pillow's own
    # bomb check on open, 9000 (81 Mpx) only ours.
    small = io.BytesIO()
    Image.new("L", (1, 1)).save(small, format="PNG")
    png = bytearray(small.getvalue())
    ihdr = struct.pack(">II", side, side) + bytes(png[24:29])
    png[16:29] = ihdr
    png[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path = tmp_path / "bomb.png"
    path.write_bytes(bytes(png))

    info = inspect_image(path)
    assert not info.ok
    assert info.error is not None and info.error.startswith("image too large"), info.error


def test_own_pixel_limit(photos: dict[str, Path]) -> None:
    info = inspect_image(photos["coffee"], max_pixels=1000)
    assert not info.ok
    assert "600x400 pixels exceeds the limit of 1000" in (info.error or "")


# --- encode ------------------------------------------------------------------------------


def test_encode_bounds_size_and_is_deterministic(photos: dict[str, Path], tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    Image.open(photos["coffee"]).resize((3000, 2000)).save(big)

    first, second = encode_for_api(big), encode_for_api(big)
    assert first == second
    raw = base64.b64decode(first.data_b64)
    assert first.sha256 == hashlib.sha256(raw).hexdigest()
    assert first.media_type == "image/jpeg"

    shown = _decode(first.data_b64)
    assert (shown.format, shown.mode, shown.size) == ("JPEG", "RGB", (1024, 683))
    assert not shown.getexif()

    small = _decode(encode_for_api(big, max_side=256).data_b64)
    assert small.size == (256, 171)


def test_encode_keeps_small_images_and_whitens_transparency(tmp_path: Path) -> None:
    path = tmp_path / "clear.png"
    Image.new("RGBA", (40, 30), (0, 0, 0, 0)).save(path)
    shown = _decode(encode_for_api(path).data_b64)
    assert shown.size == (40, 30)
    assert min(_rgb(shown, (20, 15))) > 245


def test_encode_raises_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageError, match="not an image|corrupt image"):
        encode_for_api(path)


# --- offline describer ---------------------------------------------------------------------


def test_coffee_photo_is_tagged_as_a_drink(photos: dict[str, Path]) -> None:
    description = describe_image(photos["coffee"])
    labels = [t.label for t in description.tags]
    assert {"espresso", "tea cup", "coffee mug", "cup"} & set(labels), labels
    assert description.tags[0].score is not None and description.tags[0].score > 0.3
    assert description.ocr is not None and description.ocr.status == "no_text"
    text = description.as_text()
    assert text.startswith(f"{NOT_A_CAPTION} Detected objects (EfficientNet-Lite0, ImageNet): ")
    assert "No text found in image (tesseract OCR)." in text
    assert "efficientnet-lite0" in description.method and "tesseract" in description.method


def test_cat_photo_is_tagged_as_a_cat(photos: dict[str, Path]) -> None:
    labels = [t.label.lower() for t in describe_image(photos["chelsea"]).tags]
    assert any("cat" in label or label == "egyptian mau" for label in labels), labels


@pytest.fixture
def poster(tmp_path: Path) -> Path:
    image = Image.new("RGB", (900, 220), "white")
    ImageDraw.Draw(image).text(
        (30, 50), "SARCASM ahead", font=ImageFont.load_default(size=96), fill="black"
    )
    path = tmp_path / "poster.png"
    image.save(path)
    return path


def test_ocr_reads_drawn_text(poster: Path) -> None:
    description = describe_image(poster)
    assert description.ocr is not None and description.ocr.status == "ok"
    assert description.ocr_text is not None and "SARCASM" in description.ocr_text.upper()
    assert 'Text in image (tesseract OCR): "' in description.as_text()
    assert description.model_dump()["ocr_text"] == description.ocr_text


def test_missing_tesseract_is_reported_not_raised(poster: Path) -> None:
    description = describe_image(poster, tesseract_cmd="/nonexistent/tesseract")
    assert description.ocr is not None and description.ocr.status == "unavailable"
    assert description.ocr_text is None
    assert "not read (tesseract OCR unavailable" in description.as_text()
    assert "no OCR" in description.method


def test_attribute_words_stand_in() -> None:
    description = describe_attribute_words(["man", " shirt ", "man", "", "sign"])
    assert description.source == "attribute_words"
    assert description.as_text() == (
        f"{NOT_A_CAPTION} Detected attribute words (MMSD extract_all): man, shirt, sign."
    )


def test_describe_refuses_a_bad_image(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="image file not found"):
        describe_image(tmp_path / "gone.png")
