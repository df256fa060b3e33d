"""How blob keys map to file paths, safely and reversibly.

A key is ``/``-separated segments; each becomes one path component, percent-encoded so it
can hold any character. The last segment gets a ``.json`` suffix; directory components have
their dots encoded too (``%2E``), so a directory can never be named like a file: ``a`` and
``a/b`` may both be keys. Empty, ``.`` and ``..`` segments are refused, so no key reaches
outside the store's root.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

__all__ = ["SUFFIX", "key_from_parts", "key_to_parts", "prefix_to_parts"]

SUFFIX = ".json"


def _check_segments(key: str, segments: list[str]) -> None:
    for segment in segments:
        if segment in ("", ".", ".."):
            raise ValueError(
                f"invalid blob key {key!r}: segments between '/' must be non-empty "
                "and not '.' or '..'"
            )


def _directory(segment: str) -> str:
    return quote(segment, safe="").replace(".", "%2E")


def key_to_parts(key: str) -> list[str]:
    """The path components (relative to the store's root) that hold ``key``."""
    segments = key.split("/")
    _check_segments(key, segments)
    return [*map(_directory, segments[:-1]), quote(segments[-1], safe="") + SUFFIX]


def prefix_to_parts(prefix: str) -> list[str] | None:
    """The directory to search for keys starting with ``prefix`` (``None``: no key can)."""
    complete = prefix.split("/")[:-1]
    try:
        _check_segments(prefix, complete)
    except ValueError:
        return None
    return [_directory(segment) for segment in complete]


def key_from_parts(parts: list[str]) -> str | None:
    """The key stored under these path components (``None``: not a blob file)."""
    if not parts or not parts[-1].endswith(SUFFIX):
        return None
    *directories, name = parts
    return "/".join([*map(unquote, directories), unquote(name[: -len(SUFFIX)])])
