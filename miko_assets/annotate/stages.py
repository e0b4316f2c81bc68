"""The annotation stages' names, in a module light enough for `miko --help` to list them."""

from typing import Literal

Stage = Literal["plausibility", "typicality"]
STAGES: tuple[Stage, ...] = ("plausibility", "typicality")
