"""The ten MIKO intention relations (nine ATOMIC relations plus Open), in the paper's order."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Relation(BaseModel):
    """One relation: its 1-based position in the answer, its name, and the prefix to complete."""

    model_config = ConfigDict(frozen=True)

    number: int
    name: str
    prefix: str


RELATIONS: tuple[Relation, ...] = tuple(
    Relation(number=i, name=name, prefix=prefix)
    for i, (name, prefix) in enumerate(
        (
            ("xWant", "After posting this Tweet, the user wants to"),
            ("oEffect", "After viewing this Tweet, others will"),
            ("xAttr", "The user posts this Tweet because the user is"),
            ("xIntent", "The user posts this Tweet because the user intended to"),
            ("xReact", "After posting this Tweet, the user feels"),
            ("oReact", "After viewing this Tweet, others feel"),
            ("oWant", "After viewing this Tweet, others want to"),
            ("xEffect", "After posting this Tweet, the user will"),
            ("xNeed", "Before posting this Tweet, the user needs to"),
            ("Open", "The user posts this Tweet because"),
        ),
        start=1,
    )
)

RELATION_NAMES: tuple[str, ...] = tuple(r.name for r in RELATIONS)
RELATIONS_BY_NAME: dict[str, Relation] = {r.name: r for r in RELATIONS}
