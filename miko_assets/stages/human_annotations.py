"""Storing human annotations: Label Studio exports and MIKO's released labels, each import logged.

A row is stored once per annotation key, so importing a file again adds nothing (it only fills
`intention_text_sha` into rows stored before that column existed). Every import is recorded
in `annotation_imports` with the file's path and sha256, which is also how the
`human_annotations` asset finds the files to read again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from miko_assets.annotate.labelstudio import import_export
from miko_assets.annotate.miko_release import read_release, release_annotations
from miko_assets.annotate.models import HumanAnnotation
from miko_assets.clock import utc_now
from miko_assets.stages.intentions import intention_id
from miko_assets.warehouse.schema import HUMAN_ANNOTATIONS
from miko_assets.warehouse.warehouse import Warehouse

ImportKind = Literal["labelstudio", "miko_release"]
IMPORT_KINDS: tuple[ImportKind, ...] = ("labelstudio", "miko_release")


@dataclass(frozen=True)
class ImportOutcome:
    """What one import read and added."""

    import_id: str
    kind: ImportKind
    path: str
    source: str
    source_sha256: str
    rows_read: int
    rows_added: int
    skipped: list[str] = field(default_factory=list)

    def as_metadata(self) -> dict[str, Any]:
        """Plain values for a Dagster materialization (the caller wraps the path)."""
        return {
            "kind": self.kind,
            "source_path": self.path,
            "source_sha256": self.source_sha256,
            "rows_read": self.rows_read,
            "rows_added": self.rows_added,
            "rows_already_stored": self.rows_read - self.rows_added,
            "skipped": len(self.skipped),
            "skipped_examples": "\n".join(self.skipped[:5]),
        }


def read_human_file(kind: ImportKind, path: Path) -> tuple[list[HumanAnnotation], str, str, list[str]]:
    """(rows, source name, sha256, skipped reasons) of one file of `kind`."""
    if kind == "labelstudio":
        read = import_export(path)
        return read.rows, read.source, read.source_sha256, read.skipped
    release = read_release(path)
    return release_annotations(release, intention_id), release.source, release.source_sha256, release.skipped


def import_file(warehouse: Warehouse, kind: ImportKind, path: str | Path, run_id: str | None = None) -> ImportOutcome:
    """Read one file and store the annotations not stored yet, with the import's log row, atomically."""
    path = Path(path).resolve()
    rows, source, sha, skipped = read_human_file(kind, path)
    outcome_id = uuid.uuid4().hex
    now = utc_now()
    frame = pd.DataFrame([r.model_dump() for r in rows], columns=HUMAN_ANNOTATIONS.column_names)
    frame["import_id"], frame["imported_at"] = outcome_id, now
    with warehouse.transaction(incoming_annotations=frame) as con:
        before = con.execute("SELECT count(*) FROM human_annotations").fetchall()[0][0]
        # No INSERT OR IGNORE: a DuckLake warehouse has no keys.
        con.execute(
            "INSERT INTO human_annotations BY NAME "
            "SELECT * FROM (SELECT DISTINCT ON (annotation_key) * FROM incoming_annotations) "
            "WHERE annotation_key NOT IN (SELECT annotation_key FROM human_annotations)"
        )
        con.execute(
            "UPDATE human_annotations SET intention_text_sha = incoming.intention_text_sha "
            "FROM incoming_annotations AS incoming "
            "WHERE human_annotations.annotation_key = incoming.annotation_key "
            "AND human_annotations.intention_text_sha IS NULL"
        )
        added = con.execute("SELECT count(*) FROM human_annotations").fetchall()[0][0] - before
        con.execute(
            "INSERT INTO annotation_imports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [outcome_id, kind, str(path), source, sha, len(rows), added, len(skipped), run_id, now],
        )
    return ImportOutcome(outcome_id, kind, str(path), source, sha, len(rows), added, skipped)


def known_sources(warehouse: Warehouse) -> list[tuple[ImportKind, str]]:
    """Every (kind, path) imported so far, in the order first imported."""
    return [
        (kind, path)
        for kind, path in warehouse.rows(
            "SELECT kind, path FROM annotation_imports GROUP BY kind, path ORDER BY min(imported_at)"
        )
    ]


def reimport_known_sources(
    warehouse: Warehouse, run_id: str | None = None
) -> tuple[list[ImportOutcome], list[str]]:
    """Import every known source file again (new annotations in a changed file are added);
    returns the outcomes and the paths that no longer exist."""
    outcomes, missing = [], []
    for kind, path in known_sources(warehouse):
        if Path(path).is_file():
            outcomes.append(import_file(warehouse, kind, path, run_id))
        else:
            missing.append(path)
    return outcomes, missing


def annotation_counts(warehouse: Warehouse) -> pd.DataFrame:
    """Stored human annotations per source file and stage."""
    return warehouse.query(
        "SELECT source, stage, count(*) AS annotations, count(DISTINCT intention_id) AS intentions, "
        "count(DISTINCT annotator) AS annotators FROM human_annotations GROUP BY source, stage ORDER BY source, stage"
    )
