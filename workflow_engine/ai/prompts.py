"""Prompts: text, or chat messages; how they are sent and how they are logged."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["Prompt", "messages", "prompt_text"]

Prompt = str | Sequence[Mapping[str, Any]]
"""A prompt: text, or chat messages ``{"role": "user" | "assistant", "content": str}``."""


def prompt_text(prompt: Prompt) -> str:
    """The prompt as logged: the text, or the messages' contents joined by blank lines."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(str(message.get("content", "")) for message in prompt)


def messages(prompt: Prompt) -> tuple[Mapping[str, Any], ...]:
    """The prompt as chat messages (text becomes one user message)."""
    if isinstance(prompt, str):
        return ({"role": "user", "content": prompt},)
    return tuple(dict(message) for message in prompt)
