"""JSON schemas for structured output, and reading JSON back out of model text."""

from __future__ import annotations

import copy
import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from workflow_engine.ai.errors import AIResponseError

__all__ = ["closed_schema", "is_strict_compatible", "parse_json_text", "validate_json_text"]

M = TypeVar("M", bound=BaseModel)

_FENCE = re.compile(r"^\s*```[a-zA-Z0-9_-]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


def closed_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with ``additionalProperties: false`` on every object."""
    schema = copy.deepcopy(model.model_json_schema())
    _close(schema)
    return schema


def _close(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            node.setdefault("additionalProperties", False)
        for value in node.values():
            _close(value)
    elif isinstance(node, list):
        for item in node:
            _close(item)


def is_strict_compatible(node: Any) -> bool:
    """Whether OpenAI's strict mode accepts the schema: every property of every object required."""
    if isinstance(node, dict):
        properties = node.get("properties") if node.get("type") == "object" else None
        if isinstance(properties, dict) and set(node.get("required", ())) != set(properties):
            return False
        return all(is_strict_compatible(value) for value in node.values())
    if isinstance(node, list):
        return all(is_strict_compatible(item) for item in node)
    return True


def parse_json_text(text: str) -> Any:
    """Parse JSON from model text, tolerating a surrounding markdown code fence.

    Raises ``ValueError`` when the text is not JSON.
    """
    match = _FENCE.match(text)
    return json.loads(match.group(1) if match else text)


def validate_json_text(schema: type[M], text: str, *, where: str) -> M:
    """Parse ``text`` as JSON and validate it into ``schema``; raise :class:`AIResponseError`."""
    try:
        data = parse_json_text(text)
    except ValueError as exc:
        raise AIResponseError(f"{where} did not return JSON: {exc}; got {text[:200]!r}") from exc
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise AIResponseError(
            f"{where} returned JSON that does not match {schema.__name__}: {exc}"
        ) from exc
