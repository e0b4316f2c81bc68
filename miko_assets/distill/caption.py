"""Image description stage: (post text, image) to a detailed description of the image."""

from __future__ import annotations

from miko_assets.distill.config import StageConfig, build_request
from miko_assets.distill.parsing import ParseError
from miko_assets.distill.prompts import PromptTemplate
from miko_assets.llm.models import ImageInput, LLMRequest

# What later stages are told when a post has no usable image or no description of it.
NO_CAPTION = "(none: the post has no usable image)"


def build_caption_request(
    config: StageConfig, prompt: PromptTemplate, text: str, image: ImageInput
) -> LLMRequest:
    """The request asking a multimodal model to describe `image` in the light of the post text."""
    return build_request(config, prompt, {"text": text}, images=(image,))


def parse_caption(answer: str | None) -> str:
    """The description, stripped; raises `ParseError('empty')` for an empty answer."""
    caption = (answer or "").strip()
    if not caption:
        raise ParseError("empty", "the model returned no description")
    return caption
