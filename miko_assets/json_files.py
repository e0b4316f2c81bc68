"""JSON files read whole, refused with the file's name and the line where they break."""

from __future__ import annotations

import json
from typing import Any


class MalformedJSON(ValueError):
    """A file that is not valid JSON."""


def parse_json_file(raw: bytes, name: str) -> Any:
    """The JSON value of the bytes of file `name`."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise MalformedJSON(
            f"{name} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}: fix the file"
        ) from None
    except UnicodeDecodeError as exc:
        raise MalformedJSON(f"{name} is not UTF-8 text ({exc.reason} at byte {exc.start}): save it as UTF-8") from None
