"""Print the configuration reference of docs/configuration.md from the typed settings.

Every field of `llmproxy.config.StackConfig`, with its default and its description, as one
markdown table; `--update FILE` rewrites the table between FILE's reference markers. The unit
suite compares the page with this output, so the page cannot drift from the code.

    .venv/bin/python scripts/config_reference.py --update docs/configuration.md
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import doc_table  # scripts/doc_table.py, beside this script
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from llmproxy.config import StackConfig

ROOT = Path(__file__).resolve().parents[1]
START = "<!-- config-reference:start (scripts/config_reference.py writes this table) -->"
END = "<!-- config-reference:end -->"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The settings model a field holds (directly, in a list or a dict), if any."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _value(field: FieldInfo, owner: BaseModel | None, name: str) -> Any:
    # A nested model's default instance (edge.per_client_ip ...) gives its fields' defaults.
    if owner is not None:
        return getattr(owner, name)
    return field.default_factory() if field.default_factory else field.default


def _default(field: FieldInfo, owner: BaseModel | None, name: str) -> str:
    if field.is_required() and owner is None:
        return "required"
    value = _value(field, owner, name)
    if isinstance(value, Path):
        value = value.relative_to(ROOT) if value.is_relative_to(ROOT) else value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value}"


def _rows(model: type[BaseModel], prefix: str, owner: BaseModel | None = None) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = _model_of(field.annotation)
        container = typing.get_origin(field.annotation) in (list, dict)
        if nested is not None and container:
            suffix = "[]" if typing.get_origin(field.annotation) is list else ".<name>"
            rows.append(f"| `{path}{suffix}` | | {field.description or ''} |")
            rows.extend(_rows(nested, f"{path}{suffix}."))
        elif nested is not None:
            if field.description:
                rows.append(f"| `{path}` | | {field.description} |")
            default = None if field.is_required() else _value(field, owner, name)
            rows.extend(_rows(nested, f"{path}.", default if isinstance(default, nested) else None))
        else:
            description = (field.description or "").replace("|", "\\|")
            rows.append(f"| `{path}` | {_default(field, owner, name)} | {description} |")
    return rows


def render() -> str:
    """The reference table, markers included."""
    header = ["| field | default | meaning |", "|---|---|---|"]
    return "\n".join([START, *header, *_rows(StackConfig, ""), END])


if __name__ == "__main__":
    doc_table.main(__doc__.splitlines()[0], render, START, END)
