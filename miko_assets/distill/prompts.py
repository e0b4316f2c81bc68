"""Versioned prompt templates: `prompts/<name>/<version>.yaml`, loaded, hashed and rendered.

Templates use `string.Template` placeholders (`$text`, `${caption}`), so JSON examples with
braces need no escaping and a literal dollar sign is written `$$`.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict

from miko_assets.config_files import prompts_dir
from miko_assets.llm.models import Message, canonical_json, sha256_text

_SAFE_NAME = re.compile(r"^[a-z0-9_]+$")
_VERSION = re.compile(r"^v(\d+)$")


class PromptError(ValueError):
    """A prompt file that is missing or malformed, or a render that lacks a field."""


class PromptFile(BaseModel):
    """The content of one prompt file, as written (also what `sha` covers)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: str
    description: str
    # `completion`: one call per relation or field, the answer continuing `${prefix}`.
    output: Literal["text", "json", "completion"] = "text"
    system: str
    user: str
    # Per-field prefixes of a `completion` prompt whose prefixes are not MIKO's relations.
    prefixes: dict[str, str] | None = None


class PromptTemplate(PromptFile):
    """A loaded prompt: the file's content plus `sha`, the sha256 of its canonical JSON form.

    The sha ignores YAML layout and comments but changes with any content edit (an absent
    optional field is left out, so adding one kept older shas).
    """

    sha: str

    @property
    def per_prefix(self) -> bool:
        """Whether the prompt makes one call per relation (or field), continuing its prefix."""
        return self.output == "completion"

    @property
    def placeholders(self) -> frozenset[str]:
        """Every field `render` needs for this template."""
        return frozenset(
            Template(self.system).get_identifiers() + Template(self.user).get_identifiers()
        )


def load_prompt(name: str, version: str, directory: Path | None = None) -> PromptTemplate:
    """Load `<directory>/<name>/<version>.yaml`; raise `PromptError` if absent or malformed."""
    if not _SAFE_NAME.match(name) or not _VERSION.match(version):
        raise PromptError(f"invalid prompt name or version: {name!r} {version!r}")
    path = (directory or prompts_dir()) / name / f"{version}.yaml"
    if not path.is_file():
        raise PromptError(f"no prompt file {path} (prompt {name!r} version {version!r})")
    return _load_file(path)


def all_prompts(directory: Path | None = None) -> tuple[PromptTemplate, ...]:
    """Every version of every prompt under the folder, ordered by name then version number."""
    root = directory or prompts_dir()
    versioned = [(p, _VERSION.match(p.stem)) for p in root.glob("*/*.yaml")]
    ordered = sorted((p.parent.name, int(m.group(1)), p) for p, m in versioned if m)
    return tuple(_load_file(p) for _, _, p in ordered)


def render(template: PromptTemplate, **fields: str) -> tuple[Message, ...]:
    """The messages of one call: the system message (when non-empty), then the user message.

    Raises `PromptError` naming every missing field; extra fields are ignored so one stage
    can feed all of its template versions the same fields.
    """
    missing = sorted(template.placeholders - fields.keys())
    if missing:
        raise PromptError(
            f"prompt {template.name} {template.version} needs field(s) {', '.join(missing)}; "
            f"got {', '.join(sorted(fields)) or 'none'}"
        )
    system = Template(template.system).substitute(fields)
    user = Template(template.user).substitute(fields)
    messages = [Message(role="system", content=system)] if system else []
    messages.append(Message(role="user", content=user))
    return tuple(messages)


def _load_file(path: Path) -> PromptTemplate:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        content = PromptFile.model_validate(raw)
    except (yaml.YAMLError, ValueError) as exc:
        raise PromptError(f"malformed prompt file {path}: {exc}") from exc
    if (content.name, content.version) != (path.parent.name, path.stem):
        raise PromptError(
            f"{path} declares {content.name} {content.version}; "
            "it must match its folder and file name"
        )
    for part in ("system", "user"):
        if not Template(getattr(content, part)).is_valid():
            raise PromptError(f"{path}: invalid placeholder in {part} (write a literal $ as $$)")
    sha = sha256_text(canonical_json(content.model_dump(exclude_none=True)))
    return PromptTemplate(**content.model_dump(), sha=sha)
