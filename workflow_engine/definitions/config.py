"""Config models: default extraction and validation messages a person can read."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError


def default_config(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON-mode values of the model's top-level fields that have a default."""
    defaults: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if field.is_required():
            continue
        value = field.get_default(call_default_factory=True, validated_data={})
        key = field.alias or name
        defaults[key] = TypeAdapter(Any).dump_python(value, mode="json")
    return defaults


def describe_validation_error(error: ValidationError) -> list[str]:
    """One ``path: message`` line per problem (``(root)`` when the whole value is at fault)."""
    lines = []
    for problem in error.errors():
        path = ".".join(str(part) for part in problem["loc"]) or "(root)"
        lines.append(f"{path}: {problem['msg']}")
    return lines
