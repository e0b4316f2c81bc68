"""Captions stage: each post's image described, by a multimodal model or, offline, by image analysis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from miko_assets.distill.caption import build_caption_request, parse_caption
from miko_assets.imaging.describe import OfflineImageDescription, describe_attribute_words, describe_image
from miko_assets.imaging.encode import encode_for_api
from miko_assets.imaging.inspect import ImageError
from miko_assets.llm.models import LLMRequest
from miko_assets.missing import present
from miko_assets.stages.common import Completer, StageRun, content_hash, json_object, response_failure

# The embedded text model cannot see images: captions then come from offline image analysis.
OFFLINE_PROVIDERS = frozenset({"local"})
OFFLINE_GENERATOR = ("offline", "efficientnet-lite0+tesseract")
OFFLINE_CODE_VERSION = "offline-image-analysis@efficientnet-lite0-top5+tesseract-eng"

KIND_CAPTION = "caption"
KIND_OFFLINE = "offline_image_analysis"
KIND_NONE = "none"


def captions_code_version(run_config_version: str, provider: str) -> str:
    """The stage's code version: the offline analysis when the provider cannot see images."""
    return OFFLINE_CODE_VERSION if provider in OFFLINE_PROVIDERS else run_config_version


def caption_rows(
    posts: pd.DataFrame,
    run: StageRun,
    complete: Completer,
    describe: Callable[[str, str | None], OfflineImageDescription] = describe_image,
) -> pd.DataFrame:
    """One row per post: a description (kind `caption` or `offline_image_analysis`) or a reason."""
    offline = run.config.provider in OFFLINE_PROVIDERS
    rows: list[dict[str, Any]] = []
    pending: list[tuple[dict[str, Any], LLMRequest]] = []
    for post in posts.to_dict("records"):
        image_sha = present(post.get("image_sha256"))
        row: dict[str, Any] = {
            "batch": post["batch"],
            "post_id": post["post_id"],
            "image_sha256": image_sha,
        }
        input_hash = content_hash(post["text"], image_sha)
        rows.append(row)
        if image_sha is None:
            attributes = json_object(post.get("metadata_json")).get("image_attributes")
            if attributes:
                _offline(row, run, describe_attribute_words(attributes), input_hash)
            else:
                reason = present(post.get("image_error")) or "the post has no image"
                _finish(row, run, KIND_NONE, None, run.lineage(
                    input_hash=input_hash, response=None, status="no_image", error=reason,
                    generator=OFFLINE_GENERATOR if offline else None))
        elif offline:
            try:
                _offline(row, run, describe(post["image_path"], present(post.get("image_root"))), input_hash)
            except ImageError as exc:
                _finish(row, run, KIND_NONE, None, run.lineage(
                    input_hash=input_hash, response=None, status="failed", error=str(exc),
                    generator=OFFLINE_GENERATOR))
        else:
            try:
                image = encode_for_api(
                    post["image_path"], present(post.get("image_root")), max_side=run.config.image.max_side
                )
            except ImageError as exc:
                _finish(row, run, KIND_NONE, None, run.lineage(
                    input_hash=input_hash, response=None, status="failed", error=str(exc)))
                continue
            row["input_hash"] = input_hash
            pending.append((row, build_caption_request(run.config, run.prompt, post["text"], image)))

    responses = complete([request for _, request in pending], parse_caption)
    for (row, _), response in zip(pending, responses, strict=True):
        input_hash = row.pop("input_hash")
        if response.status == "ok":
            _finish(row, run, KIND_CAPTION, parse_caption(response.text),
                    run.lineage(input_hash=input_hash, response=response, status="ok"))
        else:
            _finish(row, run, KIND_NONE, None, run.lineage(
                input_hash=input_hash, response=response, status="failed", error=response_failure(response)))
    return pd.DataFrame(rows)


def _offline(row: dict[str, Any], run: StageRun, description: OfflineImageDescription, input_hash: str) -> None:
    _finish(row, run, KIND_OFFLINE, description.as_text(), run.lineage(
        input_hash=input_hash, response=None, status="ok",
        generator=(OFFLINE_GENERATOR[0], description.method)))


def _finish(row: dict[str, Any], run: StageRun, kind: str, description: str | None, lineage: dict[str, Any]) -> None:
    row.update(lineage, description_kind=kind, description=description)
    row["caption_id"] = content_hash(row["post_id"], run.code_version, lineage["input_hash"], description, lineage["error"])
