"""Write miko's bundled sample dataset: miko_assets/sample_data/posts.jsonl + images/.

Twenty-four tweet-like posts written for this project, half sarcastic (label 1), half
sincere (label 0). Images are drawn with Pillow (signs whose text OCR can read, charts,
scenes) or taken from the photos scikit-image ships. Fixtures on purpose:
- two images carry an EXIF orientation (the pixels are stored rotated), so a reader that
  ignores orientation sees them sideways;
- one image is a JPEG truncated in the middle of its scan data (it opens, but its pixels
  cannot be decoded);
- four posts have no image.
Image names are relative to the images folder: load with
`load_posts("jsonl", <sample_data>/posts.jsonl, split="sample", images_dir=<sample_data>/images)`.
Every row names its dataset (`sample`), since the file stem `posts` says nothing.

Run from the repo root: `python scripts/make_sample.py` (needs Pillow and scikit-image).
The output is deterministic.
"""

from __future__ import annotations

import io
import json
import math
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps
from skimage import data as photos

OUT_DIR = Path(__file__).resolve().parents[1] / "miko_assets" / "sample_data"
IMAGES = "images"
DATASET = "sample"
MAX_SIDE = 400
JPEG_QUALITY = 82
EXIF_ORIENTATION_TAG = 0x0112
# Stored pixels for each orientation: applying the orientation (exif_transpose) undoes this.
STORE_ROTATED = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
TRUNCATE_AT = 0.45

Drawer = Callable[[], Image.Image]


@dataclass(frozen=True)
class Spec:
    """One sample post and how to make its image."""

    id: str
    text: str
    label: int
    created_at: str
    image: str | None = None
    draw: Drawer | None = None
    orientation: int | None = None
    truncate: bool = False
    note: str | None = None


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def fit(image: Image.Image) -> Image.Image:
    image = image.copy()
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return image


def photo(array: np.ndarray) -> Drawer:
    """A scikit-image photo (uint8 grey, RGB or RGBA), scaled down."""
    return lambda: fit(Image.fromarray(array))


def centered_text(
    draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], lines: list[str], size: int, fill: str
) -> None:
    """Draw lines of text centred in a box, one under the other."""
    face = font(size)
    heights = [draw.textbbox((0, 0), line, font=face)[3] for line in lines]
    y = box[1] + (box[3] - box[1] - sum(heights) - 10 * (len(lines) - 1)) // 2
    for line, height in zip(lines, heights, strict=True):
        width = draw.textlength(line, font=face)
        draw.text((box[0] + (box[2] - box[0] - width) / 2, y), line, font=face, fill=fill)
        y += height + 10


def sign(lines: list[str], wall: str, board: str, ink: str, size: int = 40) -> Drawer:
    """A sign board on a brick wall."""

    def make() -> Image.Image:
        image = Image.new("RGB", (400, 300), wall)
        draw = ImageDraw.Draw(image)
        for row, y in enumerate(range(0, 300, 20)):
            offset = 0 if row % 2 else 20
            for x in range(-offset, 400, 40):
                draw.rectangle((x + 1, y + 1, x + 38, y + 18), outline="#5a2a1a")
        draw.rectangle((40, 50, 360, 250), fill=board, outline="#222222", width=6)
        centered_text(draw, (40, 50, 360, 250), lines, size, ink)
        return image

    return make


def bar_chart(title: str, labels: list[str], values: list[float], color: str) -> Drawer:
    def make() -> Image.Image:
        image = Image.new("RGB", (400, 300), "white")
        draw = ImageDraw.Draw(image)
        centered_text(draw, (0, 5, 400, 40), [title], 22, "black")
        left, bottom, top = 50, 260, 55
        draw.line((left, top, left, bottom, 385, bottom), fill="black", width=2)
        step = (385 - left) / len(values)
        scale = (bottom - top) / max(values)
        for index, (label, value) in enumerate(zip(labels, values, strict=True)):
            x = left + index * step + 6
            draw.rectangle((x, bottom - value * scale, x + step - 12, bottom - 1), fill=color)
            draw.text((x, bottom + 6), label, font=font(14), fill="black")
        return image

    return make


def weather(rainy: bool) -> Drawer:
    def make() -> Image.Image:
        rng = random.Random(7)
        image = Image.new("RGB", (400, 300))
        draw = ImageDraw.Draw(image)
        sky_top, sky_bottom = ((90, 95, 105), (150, 155, 160)) if rainy else ((70, 140, 230), (170, 210, 250))
        for y in range(200):
            t = y / 200
            shade = tuple(int(a + (b - a) * t) for a, b in zip(sky_top, sky_bottom, strict=True))
            draw.line((0, y, 400, y), fill=shade)
        if rainy:
            draw.rectangle((0, 200, 400, 230), fill=(70, 90, 110))  # grey sea
            draw.rectangle((0, 230, 400, 300), fill=(190, 175, 140))  # wet sand
            for cx, cy in ((80, 50), (220, 35), (330, 70)):
                draw.ellipse((cx - 60, cy - 25, cx + 60, cy + 25), fill=(120, 122, 128))
            for _ in range(160):
                x, y = rng.randrange(400), rng.randrange(300)
                draw.line((x, y, x - 4, y + 14), fill=(200, 205, 215), width=1)
            draw.polygon(((150, 260), (210, 180), (270, 260)), fill=(200, 60, 60))  # closed parasol
        else:
            draw.rectangle((0, 200, 400, 300), fill=(80, 160, 70))  # lawn
            draw.ellipse((310, 20, 370, 80), fill=(255, 220, 60))
            for x in (60, 170, 300):
                draw.rectangle((x - 6, 150, x + 6, 215), fill=(110, 70, 40))
                draw.ellipse((x - 40, 90, x + 40, 170), fill=(40, 120, 45))
            draw.rectangle((180, 230, 260, 240), fill=(140, 90, 50))  # bench
        return image

    return make


def traffic() -> Image.Image:
    rng = random.Random(11)
    image = Image.new("RGB", (400, 300), (150, 180, 210))
    draw = ImageDraw.Draw(image)
    draw.polygon(((0, 300), (400, 300), (260, 120), (140, 120)), fill=(70, 70, 75))
    for top, bottom in (((180, 120), (70, 300)), ((220, 120), (330, 300))):
        draw.line((*top, *bottom), fill=(235, 235, 235), width=3)  # lane markings
    # Rows of cars shrinking towards the horizon, three lanes, red tail lights.
    for y, size in ((250, 70), (200, 52), (165, 38), (140, 26)):
        for lane in (-1, 0, 1):
            cx, half = 200 + lane * size * 1.25, size / 2
            color = tuple(rng.randrange(60, 230) for _ in range(3))
            draw.rectangle((cx - half, y - size * 0.6, cx + half, y), fill=color)
            draw.rectangle((cx - half * 0.7, y - size * 0.55, cx + half * 0.7, y - size * 0.35), fill=(40, 50, 60))
            for light_x in (cx - half + 3, cx + half - 10):
                draw.rectangle((light_x, y - size * 0.25, light_x + 7, y - size * 0.12), fill="red")
    return image


def cake() -> Image.Image:
    image = Image.new("RGB", (400, 300), (250, 235, 220))
    draw = ImageDraw.Draw(image)
    draw.ellipse((70, 230, 330, 270), fill=(235, 235, 240))  # plate
    draw.polygon(((110, 250), (300, 240), (290, 160), (115, 170)), fill=(150, 90, 60))  # lopsided sponge
    draw.polygon(((115, 170), (290, 160), (285, 145), (118, 158)), fill=(250, 250, 250))  # icing
    for x in range(140, 280, 30):
        draw.rectangle((x, 120, x + 6, 152), fill=(90, 160, 230))
        draw.ellipse((x - 2, 106, x + 8, 122), fill=(255, 190, 40))
    centered_text(draw, (0, 10, 400, 60), ["HAPPY BIRTHDAY MOM"], 26, "#b03060")
    return image


def wall_clock() -> Image.Image:
    """A wall clock at ten past three."""
    image = Image.new("RGB", (400, 300), (225, 228, 232))
    draw = ImageDraw.Draw(image)
    cx, cy, radius = 200, 150, 120
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill="white", outline=(40, 40, 40), width=8)
    for hour in range(12):
        angle = math.radians(hour * 30)
        inner = radius - (22 if hour % 3 == 0 else 14)
        outer = radius - 8
        draw.line(
            (cx + inner * math.sin(angle), cy - inner * math.cos(angle),
             cx + outer * math.sin(angle), cy - outer * math.cos(angle)),
            fill="black", width=5 if hour % 3 == 0 else 2,
        )
    for fraction, length, width in ((3 + 10 / 60) / 12, 60, 8), (10 / 60, 95, 5):
        angle = 2 * math.pi * fraction
        draw.line((cx, cy, cx + length * math.sin(angle), cy - length * math.cos(angle)), fill="black", width=width)
    draw.ellipse((cx - 7, cy - 7, cx + 7, cy + 7), fill=(180, 30, 30))
    return image


def sunset() -> Image.Image:
    image = Image.new("RGB", (400, 300))
    draw = ImageDraw.Draw(image)
    for y in range(300):
        t = y / 300
        draw.line((0, y, 400, y), fill=(int(250 - 90 * t), int(150 - 110 * t), int(80 + 60 * t)))
    draw.ellipse((150, 170, 250, 270), fill=(255, 200, 90))
    for x in range(0, 400, 50):
        draw.rectangle((x, 230 - (x * 37) % 70, x + 45, 300), fill=(30, 25, 40))  # rooftops
    return image


SPECS = [
    Spec("s01", "Love it when the café hands me a $6 cup that's 90% foam. Truly living the dream ☕ #MondayMotivation",
         1, "2024-03-04T08:12:00Z", "coffee.jpg", photo(photos.coffee())),
    Spec("s02", "My cat has decided my keyboard is her new bed. Working from home is going GREAT 🙃",
         1, "2024-03-04T10:40:00Z", "cat.jpg", photo(photos.chelsea())),
    Spec("s03", "Took my niece to the space exhibit today and now she says she's going to be an astronaut. "
                "I believe her 🚀✨",
         0, "2024-03-05T17:03:00Z", "astronaut.jpg", photo(photos.astronaut())),
    Spec("s04", "Watched the launch from the beach this morning. Still have goosebumps. #space",
         0, "2024-03-06T07:55:00Z", "launch.jpg", photo(photos.rocket()), orientation=8,
         note="pixels stored rotated; EXIF orientation 8 turns them upright"),
    Spec("s05", "Oh wonderful, the gym is closed AGAIN. Guess I'll stay fit by thinking about exercise #fitness #goals",
         1, "2024-03-06T18:20:00Z", "gym_closed.jpg",
         sign(["GYM CLOSED", "FOR MAINTENANCE"], "#a0522d", "white", "#c00000", 28), orientation=6,
         note="pixels stored rotated; EXIF orientation 6 turns them upright"),
    Spec("s06", "Nothing says welcome back to the office like taking the stairs to the 9th floor. Best cardio ever 😅",
         1, "2024-03-07T09:02:00Z", "out_of_order.jpg", sign(["OUT OF ORDER"], "#8b4a35", "#fff6a0", "black")),
    Spec("s07", "My savings plan is going really well this year 📉 #adulting",
         1, "2024-03-08T21:15:00Z", "savings_chart.png",
         bar_chart("MY SAVINGS 2024", ["Jan", "Feb", "Mar", "Apr", "May"], [900, 620, 400, 180, 35], "#2e8b57")),
    Spec("s08", "Hit 10k steps every single day this week! Small wins 💪 #fitness",
         0, "2024-03-10T20:00:00Z", "steps_chart.png",
         bar_chart("STEPS THIS WEEK", ["M", "T", "W", "T", "F", "S", "S"],
                   [10400, 11200, 10050, 12800, 10900, 15300, 10100], "#1f77b4")),
    Spec("s09", "The forecast promised sunshine for our beach day. Nailed it, weather app 🌧️",
         1, "2024-03-11T13:30:00Z", "rainy_beach.jpg", weather(rainy=True)),
    Spec("s10", "Finally some sun after a week of rain. Lunch break in the park 🌳☀️",
         0, "2024-03-12T12:45:00Z", "sunny_park.jpg", weather(rainy=False)),
    Spec("s11", "Nothing like a relaxing two-hour commute to start the day #traffic",
         1, "2024-03-13T07:48:00Z", "traffic.jpg", traffic),
    Spec("s12", "Baked my first ever cake for mom's birthday. It's a bit lopsided but she loved it ❤️",
         0, "2024-03-14T19:10:00Z", "cake.jpg", cake),
    Spec("s13", "Just read all 47 pages of the terms and conditions, like everyone does. Riveting stuff 📄",
         1, "2024-03-15T22:05:00Z", "terms.jpg", photo(photos.page())),
    Spec("s14", "The moon tonight is unreal. Stepped outside and just stood there for ten minutes 🌕",
         0, "2024-03-16T23:30:00Z", "moon.jpg", photo(photos.moon())),
    Spec("s15", "Here's what's left of my paycheck after rent. Feeling very rich today 💸",
         1, "2024-03-18T18:00:00Z", "coins.jpg", photo(photos.coins())),
    Spec("s16", "Dusted off my grandpa's old film camera this weekend. Can't wait to see how the roll turns out 📷",
         0, "2024-03-17T11:20:00Z", "photographer.jpg", photo(photos.camera())),
    Spec("s17", "Our community garden finally has a logo! Thanks to everyone who voted 🌱 #community",
         0, "2024-03-19T15:00:00Z", "logo.png", photo(photos.logo())),
    Spec("s18", "Meetings that could have been an email are my favourite way to spend an afternoon. "
                "Only 3 more hours to go",
         1, "2024-03-20T14:00:00Z", "clock.jpg", wall_clock),
    Spec("s19", "Caught the sunset from the rooftop tonight, no filter needed 🌅",
         0, "2024-03-21T19:42:00Z", "sunset.jpg", sunset, truncate=True,
         note="image deliberately truncated mid-scan: it opens but cannot be decoded"),
    Spec("s20", "Can't wait to spend my whole Saturday doing taxes. Best. Weekend. Ever. #blessed",
         1, "2024-03-22T09:30:00Z"),
    Spec("s21", "Thank you to everyone who came to the bake sale! We raised $420 for the animal shelter 🐶",
         0, "2024-03-23T17:45:00Z"),
    Spec("s22", "Got my flu shot this morning. Arm is sore but totally worth it.",
         0, "2024-03-25T10:10:00Z"),
    Spec("s23", "Flight delayed another 3 hours. Airlines really know how to make you feel special ✈️ #travel",
         1, "2024-03-26T06:35:00Z"),
    Spec("s24", "New bakery opened around the corner and the sourdough is amazing. Going back tomorrow 🍞",
         0, "2024-03-27T08:05:00Z", "bakery.jpg",
         sign(["FRESH BREAD", "7AM - 2PM"], "#6b4f3a", "#1e2a24", "#f5f5f0", 36)),
]


def encode(image: Image.Image, name: str, orientation: int | None) -> bytes:
    """Encode an image as its file extension says, storing it rotated under an EXIF orientation."""
    buffer = io.BytesIO()
    if name.endswith(".png"):
        image.save(buffer, format="PNG", optimize=True)
        return buffer.getvalue()
    exif = Image.Exif()
    if orientation is not None:
        image = image.transpose(STORE_ROTATED[orientation])
        exif[EXIF_ORIENTATION_TAG] = orientation
    image.convert("RGB" if image.mode not in ("RGB", "L") else image.mode).save(
        buffer, format="JPEG", quality=JPEG_QUALITY, exif=exif
    )
    return buffer.getvalue()


def check_orientation(payload: bytes, upright: Image.Image) -> None:
    with Image.open(io.BytesIO(payload)) as stored:
        shown = ImageOps.exif_transpose(stored)
        assert shown.size == upright.size, (shown.size, upright.size)
        difference = np.abs(np.asarray(shown.convert("L"), float) - np.asarray(upright.convert("L"), float))
        assert difference.mean() < 8, difference.mean()


def main() -> None:
    images_dir = OUT_DIR / IMAGES
    if images_dir.exists():
        shutil.rmtree(images_dir)
    images_dir.mkdir(parents=True)
    rows = []
    for spec in SPECS:
        row: dict[str, object] = {"id": spec.id, "dataset": DATASET, "text": spec.text}
        if spec.image is not None and spec.draw is not None:
            upright = spec.draw()
            payload = encode(upright, spec.image, spec.orientation)
            if spec.orientation is not None:
                check_orientation(payload, upright)
            if spec.truncate:
                payload = payload[: int(len(payload) * TRUNCATE_AT)]
            (images_dir / spec.image).write_bytes(payload)
            row["image"] = spec.image
        row |= {"label": spec.label, "created_at": spec.created_at, "lang": "en"}
        if spec.note is not None:
            row["note"] = spec.note
        rows.append(row)
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    (OUT_DIR / "posts.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    total = sum(path.stat().st_size for path in OUT_DIR.rglob("*") if path.is_file())
    print(f"wrote {len(rows)} posts and {len(list(images_dir.iterdir()))} images ({total / 1024:.0f} KiB) to {OUT_DIR}")


if __name__ == "__main__":
    main()
