"""The one record every dataset loader yields."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Post(BaseModel):
    """A social-media post as read from its source, before normalisation.

    `post_id` is stable across re-ingests: `<dataset>:<source id>`.
    `text_error` is set when the source text could not be decoded; `text` then holds
    the best-effort decoding so that nothing is lost.
    """

    model_config = ConfigDict(frozen=True)

    post_id: str
    dataset: str
    split: str
    source_id: str
    text: str
    text_error: str | None = None
    image_path: str | None = None
    # The folder the image must stay inside: the images dir given at ingest or the file's folder.
    image_root: str | None = None
    label: int | None = Field(default=None, description="binary sarcasm label, 1 = sarcastic")
    labels: dict[str, Any] = Field(default_factory=dict, description="other labels of the source")
    metadata: dict[str, Any] = Field(default_factory=dict, description="source metadata")


def make_post_id(dataset: str, source_id: str) -> str:
    return f"{dataset}:{source_id}"
