"""Label Studio round trip: task JSON and labelling configs out, JSON exports back in.

Stage 1 (plausibility) and stage 2 (typicality) are separate Label Studio projects: stage 2
gets the tasks whose stage-1 majority is "yes" (`plausible_intentions`). The import reads
Label Studio's full "JSON" export: a list of tasks, each with its `data` and its
`annotations` (one per annotator, results keyed by the control tag's `from_name`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import pandas as pd
from pydantic import BaseModel, ConfigDict

from miko_assets.annotate.models import (
    PLAUSIBILITY_LABELS,
    HumanAnnotation,
    Stage,
    annotation_key,
    intention_text_sha,
    normalize_label,
)
from miko_assets.annotate.report import human_consensus
from miko_assets.imaging.confine import confined_path
from miko_assets.json_files import parse_json_file

# Control tag names in the labelling configs; an export's results are keyed by them.
FROM_NAMES: dict[Stage, str] = {"plausibility": "plausible", "typicality": "typicality"}
STAGE_BY_FROM_NAME: dict[str, Stage] = {v: k for k, v in FROM_NAMES.items()}
INTENTION_TAG = "intention"
ANNOTATOR_SOURCE = "labelstudio"


class AnnotationItem(BaseModel):
    """One intention to be judged, with the post it was distilled from.

    `image` is what Label Studio loads: an http(s) URL or a local-files URL
    (see `local_files_url`); None for text-only posts.
    """

    model_config = ConfigDict(frozen=True)

    intention_id: str
    post_id: str
    relation: str
    intention: str
    post_text: str
    image: str | None = None


def build_tasks(items: Iterable[AnnotationItem]) -> list[dict[str, Any]]:
    """Label Studio import tasks, one per item; a missing image becomes an empty string."""
    return [
        {
            "data": {
                "text": item.post_text,
                "image": item.image or "",
                "intention": item.intention,
                "relation": item.relation,
                "intention_id": item.intention_id,
                "post_id": item.post_id,
            }
        }
        for item in items
    ]


def local_files_url(path: str | Path, document_root: str | Path) -> str:
    """The URL under which Label Studio's local-files storage serves `path`.

    Label Studio serves files below LOCAL_FILES_DOCUMENT_ROOT as
    `/data/local-files/?d=<path relative to that root>`. Raises `UnsafeImagePath` for a path
    that is not a regular file inside that root (see `confined_path`).
    """
    root = Path(document_root).resolve()
    relative = confined_path(path, root).relative_to(root)
    return "/data/local-files/?d=" + quote(str(PurePosixPath(*relative.parts)))


_POST_VIEW = """  <Header value="Post"/>
  <Text name="text" value="$text"/>
{image}  <Header value="$relation"/>
  <Text name="{intention}" value="$intention"/>
"""
_IMAGE_TAG = '  <Image name="image" value="$image" maxWidth="480px"/>\n'

_PLAUSIBILITY_CONTROL = """  <Header value="Is this statement plausible for the post?"/>
  <Choices name="{name}" toName="{intention}" choice="single-radio" showInline="true" required="true">
{choices}  </Choices>
"""
_TYPICALITY_CONTROL = """  <Header value="How typical is this statement for the post? (1 = very atypical, 5 = very typical)"/>
  <Rating name="{name}" toName="{intention}" maxRating="5" icon="star" required="true"/>
"""


def labeling_config(stage: Stage, with_image: bool = True) -> str:
    """The Label Studio labelling config XML for one stage's project."""
    view = _POST_VIEW.format(
        image=_IMAGE_TAG if with_image else "", intention=INTENTION_TAG
    )
    if stage == "plausibility":
        choices = "".join(
            f'    <Choice value="{label}"/>\n' for label in PLAUSIBILITY_LABELS
        )
        control = _PLAUSIBILITY_CONTROL.format(
            name=FROM_NAMES[stage], intention=INTENTION_TAG, choices=choices
        )
    else:
        control = _TYPICALITY_CONTROL.format(
            name=FROM_NAMES[stage], intention=INTENTION_TAG
        )
    return f"<View>\n{view}{control}</View>\n"


@dataclass(frozen=True)
class LabelStudioImport:
    """The rows read from one export file, and what was left out and why."""

    rows: list[HumanAnnotation]
    source: str
    source_sha256: str
    tasks: int
    annotations: int
    cancelled: int
    skipped: list[str] = field(default_factory=list)


def import_export(
    source: str | Path | bytes, source_name: str | None = None
) -> LabelStudioImport:
    """Flat annotation rows from a Label Studio JSON export (path or raw bytes).

    Cancelled (skipped) annotations are counted, not imported. A result that cannot be
    read (unknown control, several or unknown choices, no intention_id or intention text
    in the task) is left out with a reason in `skipped`. Each row carries the sha of the
    task's intention text, the text the annotator saw. Rows carry a key that does not
    depend on the file, so importing the same annotation again, from this export or a
    later one, can be de-duplicated by the caller; an annotation revised in Label Studio
    gets a new key and the report counts each annotator's latest row.
    """
    if isinstance(source, bytes):
        raw, name = source, source_name or "<bytes>"
    else:
        raw, name = Path(source).read_bytes(), source_name or str(source)
    sha = hashlib.sha256(raw).hexdigest()
    tasks = parse_json_file(raw, name)
    if not isinstance(tasks, list) or not all(
        isinstance(t, dict) and "data" in t for t in tasks
    ):
        raise ValueError(
            "not a Label Studio JSON export: expected a list of tasks with 'data' "
            "(JSON_MIN and CSV exports do not carry annotation ids)"
        )

    rows: list[HumanAnnotation] = []
    skipped: list[str] = []
    annotations = cancelled = 0
    for task in tasks:
        data = task["data"]
        intention_id = data.get("intention_id")
        text = data.get("intention")
        for annotation in task.get("annotations") or []:
            annotations += 1
            if annotation.get("was_cancelled"):
                cancelled += 1
                continue
            where = f"task {task.get('id')} annotation {annotation.get('id')}"
            if not intention_id:
                skipped.append(f"{where}: task data has no intention_id")
                continue
            if not isinstance(text, str) or not text.strip():
                skipped.append(f"{where}: task data has no intention text")
                continue
            annotator = _annotator(annotation.get("completed_by"))
            for result in annotation.get("result") or []:
                read = _read_result(result)
                if isinstance(read, str):
                    skipped.append(f"{where}: {read}")
                    continue
                stage, label = read
                annotation_id = str(annotation.get("id"))
                updated_at = annotation.get("updated_at") or annotation.get(
                    "created_at"
                )
                rows.append(
                    HumanAnnotation(
                        # a revised annotation keeps its id but gets a new key, so the
                        # revision is stored beside the old row and the latest counts
                        annotation_key=annotation_key(
                            ANNOTATOR_SOURCE,
                            intention_id,
                            stage,
                            annotator,
                            annotation_id,
                            updated_at,
                            label,
                        ),
                        intention_id=str(intention_id),
                        intention_text_sha=intention_text_sha(text),
                        post_id=data.get("post_id"),
                        relation=str(data.get("relation", "")),
                        stage=stage,
                        annotator=annotator,
                        label=label,
                        annotation_id=annotation_id,
                        source=name,
                        source_sha256=sha,
                        updated_at=updated_at,
                    )
                )
    return LabelStudioImport(
        rows=rows,
        source=name,
        source_sha256=sha,
        tasks=len(tasks),
        annotations=annotations,
        cancelled=cancelled,
        skipped=skipped,
    )


def _annotator(completed_by: Any) -> str:
    # Label Studio exports the user id; older versions export the user object instead.
    if isinstance(completed_by, dict):
        return str(completed_by.get("email") or completed_by.get("id"))
    return str(completed_by)


def _read_result(result: dict[str, Any]) -> tuple[Stage, str] | str:
    """(stage, canonical label) of one result, or why it cannot be read."""
    from_name = result.get("from_name")
    stage = STAGE_BY_FROM_NAME.get(str(from_name))
    if stage is None:
        return f"result from unknown control {from_name!r}"
    value = result.get("value") or {}
    if stage == "plausibility":
        choices = value.get("choices") or []
        if len(choices) != 1:
            return f"expected one choice, got {choices!r}"
        raw = choices[0]
    else:
        raw = value.get("rating")
    label = normalize_label(stage, raw)
    if label is None:
        return f"{stage} label {raw!r} is not on the scale"
    return stage, label


def plausible_intentions(human: pd.DataFrame) -> set[tuple[str, str]]:
    """(intention id, text sha) pairs whose stage-1 human majority is "yes": the stage-2 tasks
    are those whose current text is the one found plausible."""
    consensus = human_consensus(human, "plausibility")
    plausible = consensus[consensus["consensus"] == "yes"]
    return set(zip(plausible["intention_id"], plausible["intention_text_sha"]))
