"""The filesystem and fsspec blob stores: the BlobStore conformance suite, and safe key paths."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from workflow_engine.blobs import FilesystemBlobStore, FsspecBlobStore
from workflow_engine.blobs._keys import key_from_parts, key_to_parts
from workflow_engine.errors import PayloadTooLargeError
from workflow_engine.persistence.sql.values import InvalidValueError
from workflow_engine.ports import BlobStore
from workflow_engine.testing.conformance import BlobStoreConformance


class TestFilesystemBlobStore(BlobStoreConformance):
    @pytest.fixture
    def blob_store(self, tmp_path: Path) -> BlobStore:
        return FilesystemBlobStore(tmp_path / "blobs")


class TestFsspecLocalBlobStore(BlobStoreConformance):
    @pytest.fixture
    def blob_store(self, tmp_path: Path) -> BlobStore:
        return FsspecBlobStore(f"file://{tmp_path}/blobs")


class TestFsspecMemoryBlobStore(BlobStoreConformance):
    @pytest.fixture
    def blob_store(self) -> BlobStore:
        return FsspecBlobStore(f"memory://wfe-tests/{uuid.uuid4().hex}")


@pytest.fixture(params=["filesystem", "fsspec-file", "fsspec-memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "filesystem":
        return FilesystemBlobStore(tmp_path / "blobs")
    if request.param == "fsspec-file":
        return FsspecBlobStore(f"file://{tmp_path}/blobs")
    return FsspecBlobStore(f"memory://wfe-tests/{uuid.uuid4().hex}")


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "a//b", "", "a/", "./a", "a/."])
def test_keys_that_could_leave_the_root_are_refused(store: BlobStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid blob key"):
        store.put(key, 1)
    with pytest.raises(ValueError, match="invalid blob key"):
        store.get(key)


def test_a_key_and_its_sub_keys_coexist(store: BlobStore) -> None:
    store.put("a", 1)
    store.put("a/b", 2)
    store.put("a.json/c", 3)
    assert (store.get("a"), store.get("a/b"), store.get("a.json/c")) == (1, 2, 3)
    assert store.list("a") == ["a", "a.json/c", "a/b"]


def test_dotted_segments_stay_inside_the_root(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs")
    store.put("..x/.hidden/...", {"v": 1})
    inside = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
    assert len(inside) == 1 and store.list("") == ["..x/.hidden/..."]
    assert [p for p in tmp_path.iterdir()] == [tmp_path / "blobs"]


def test_delete_prunes_empty_directories(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs")
    store.put("run-1/stage/output.json", 1)
    store.delete("run-1/stage/output.json")
    assert list((tmp_path / "blobs").iterdir()) == []


def test_files_are_plain_json(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    store.put("run-1/out.json", {"words": ["a", "é"]})
    path = tmp_path / "run-1" / "out.json.json"
    assert path.read_text(encoding="utf-8") == '{"words":["a","é"]}'


def test_non_json_value_is_refused_and_nothing_written(store: BlobStore) -> None:
    with pytest.raises(InvalidValueError, match="not JSON-serialisable"):
        store.put("k", {"x": object()})
    assert not store.has("k") and store.list("") == []


def test_oversized_value_is_refused(tmp_path: Path) -> None:
    for store in (
        FilesystemBlobStore(tmp_path / "fs", max_json_bytes=10),
        FsspecBlobStore(f"file://{tmp_path}/fsspec", max_json_bytes=10),
    ):
        with pytest.raises(PayloadTooLargeError):
            store.put("k", "x" * 100)
        assert not store.has("k")


@pytest.mark.parametrize(
    "key", ["a", "run-1/stage/output.json", "x/%2F/100%/é ü/(1)", "a.b/c.d", "~u_-"]
)
def test_key_paths_round_trip(key: str) -> None:
    assert key_from_parts(key_to_parts(key)) == key
