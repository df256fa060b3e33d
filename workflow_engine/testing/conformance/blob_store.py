"""The conformance suite of the :class:`~workflow_engine.ports.BlobStore` port.

Subclass :class:`BlobStoreConformance` and provide a ``blob_store`` fixture (an empty store).
"""

from __future__ import annotations

from typing import Any

import pytest

from workflow_engine.errors import BlobNotFoundError
from workflow_engine.ports import BlobStore

OUTPUT_KEY = "workflow-v2/wf/run-1/extract/output.json"


class BlobStoreConformance:
    """Cases every BlobStore must pass (fixture: ``blob_store``)."""

    def test_put_then_get_round_trips(self, blob_store: BlobStore) -> None:
        value = {"words": 3, "nested": {"list": [1, "two", None, True, 2.5]}}
        blob_store.put(OUTPUT_KEY, value)
        assert blob_store.get(OUTPUT_KEY) == value

    @pytest.mark.parametrize("value", ["text", 42, 1.5, True, None, [1, {"a": []}], {}])
    def test_any_json_value_round_trips(self, blob_store: BlobStore, value: Any) -> None:
        blob_store.put("k", value)
        assert blob_store.get("k") == value

    def test_get_missing_key_raises(self, blob_store: BlobStore) -> None:
        with pytest.raises(BlobNotFoundError) as raised:
            blob_store.get("missing/key")
        assert raised.value.key == "missing/key" and "missing/key" in str(raised.value)

    def test_missing_key_error_is_a_key_error(self, blob_store: BlobStore) -> None:
        with pytest.raises(KeyError):
            blob_store.get("missing")

    def test_has(self, blob_store: BlobStore) -> None:
        assert blob_store.has("k") is False
        blob_store.put("k", {"a": 1})
        assert blob_store.has("k") is True

    def test_has_stored_none(self, blob_store: BlobStore) -> None:
        blob_store.put("k", None)
        assert blob_store.has("k") is True

    def test_put_overwrites(self, blob_store: BlobStore) -> None:
        blob_store.put("k", {"v": 1})
        blob_store.put("k", {"v": 2})
        assert blob_store.get("k") == {"v": 2}

    def test_delete(self, blob_store: BlobStore) -> None:
        blob_store.put("k", 1)
        blob_store.put("other", 2)
        blob_store.delete("k")
        assert blob_store.has("k") is False and blob_store.get("other") == 2
        with pytest.raises(BlobNotFoundError):
            blob_store.get("k")

    def test_delete_missing_key_is_a_no_op(self, blob_store: BlobStore) -> None:
        blob_store.delete("never-stored")
        assert blob_store.has("never-stored") is False

    def test_list_by_prefix_sorted(self, blob_store: BlobStore) -> None:
        for key in ("run-1/b/output.json", "run-2/a/output.json", "run-1/a/output.json"):
            blob_store.put(key, key)
        assert blob_store.list("run-1/") == ["run-1/a/output.json", "run-1/b/output.json"]
        assert blob_store.list("") == sorted(
            ["run-1/a/output.json", "run-1/b/output.json", "run-2/a/output.json"]
        )
        assert blob_store.list("run-3/") == []

    def test_list_forgets_deleted_keys(self, blob_store: BlobStore) -> None:
        blob_store.put("p/a", 1)
        blob_store.put("p/b", 2)
        blob_store.delete("p/a")
        assert blob_store.list("p/") == ["p/b"]

    def test_stored_value_is_not_shared_with_the_caller(self, blob_store: BlobStore) -> None:
        value: dict[str, Any] = {"items": [1]}
        blob_store.put("k", value)
        value["items"].append(2)
        blob_store.get("k")["items"].append(3)
        assert blob_store.get("k") == {"items": [1]}

    def test_keys_with_special_characters(self, blob_store: BlobStore) -> None:
        key = "run-1/stage/artifacts/report%20(final)%2Fv1.json"
        blob_store.put(key, {"ok": True})
        assert blob_store.get(key) == {"ok": True} and blob_store.list("run-1/") == [key]
