"""StageStorage: blob access scoped to one run and one stage."""

from __future__ import annotations

import pytest

from workflow_engine import BlobNotFoundError, StageStorage
from workflow_engine.testing import InMemoryBlobStore


@pytest.fixture
def blobs() -> InMemoryBlobStore:
    return InMemoryBlobStore()


def storage_for(blobs, run_id: str = "run-1", stage_id: str = "extract") -> StageStorage:
    return StageStorage(blobs, workflow_type="etl", workflow_run_id=run_id, stage_id=stage_id)


def test_save_and_load_round_trip_nested_json(blobs):
    storage = storage_for(blobs)
    data = {"rows": [{"id": 1, "tags": ["a"]}, {"id": 2, "tags": []}], "meta": {"ok": True}}

    storage.save("rows.json", data)

    assert storage.load("rows.json") == data


def test_loaded_values_are_copies_not_the_saved_object(blobs):
    storage = storage_for(blobs)
    data = {"items": [1]}
    storage.save("k", data)

    data["items"].append(2)
    loaded = storage.load("k")
    loaded["items"].append(3)

    assert storage.load("k") == {"items": [1]}


def test_loading_a_missing_key_raises_blob_not_found_naming_the_key(blobs):
    with pytest.raises(BlobNotFoundError) as caught:
        storage_for(blobs).load("nothing.json")

    assert caught.value.key == "workflow-v2/etl/run-1/extract/nothing.json"
    assert "nothing.json" in str(caught.value)
    assert isinstance(caught.value, KeyError)


def test_exists_and_delete(blobs):
    storage = storage_for(blobs)
    storage.save("a", 1)

    assert storage.exists("a")
    assert not storage.exists("b")
    storage.delete("a")
    storage.delete("never-saved")
    assert not storage.exists("a")


def test_keys_are_namespaced_under_the_run_and_stage(blobs):
    storage_for(blobs).save("out.json", {"x": 1})

    assert blobs.list("") == ["workflow-v2/etl/run-1/extract/out.json"]


def test_two_runs_using_the_same_key_do_not_collide(blobs):
    first, second = storage_for(blobs, run_id="run-1"), storage_for(blobs, run_id="run-2")

    first.save("state", "one")
    second.save("state", "two")

    assert (first.load("state"), second.load("state")) == ("one", "two")


def test_two_stages_of_one_run_using_the_same_key_do_not_collide(blobs):
    extract, load = storage_for(blobs, stage_id="extract"), storage_for(blobs, stage_id="load")

    extract.save("state", "e")
    load.save("state", "l")

    assert (extract.load("state"), load.load("state")) == ("e", "l")


def test_a_stage_reads_and_manages_another_stages_blobs_with_stage_id(blobs):
    storage_for(blobs, stage_id="extract").save("rows", [1, 2])
    load = storage_for(blobs, stage_id="load")

    assert not load.exists("rows")
    assert load.exists("rows", stage_id="extract")
    assert load.load("rows", stage_id="extract") == [1, 2]
    load.save("note", "hi", stage_id="extract")
    assert storage_for(blobs, stage_id="extract").load("note") == "hi"
    load.delete("rows", stage_id="extract")
    assert not storage_for(blobs, stage_id="extract").exists("rows")


def test_get_stage_key_defaults_to_this_stage_and_output_json(blobs):
    storage = storage_for(blobs)

    assert storage.get_stage_key() == "workflow-v2/etl/run-1/extract/output.json"
    assert storage.get_stage_key(suffix="debug/raw.txt") == (
        "workflow-v2/etl/run-1/extract/debug/raw.txt"
    )
    assert storage.get_stage_key("load") == "workflow-v2/etl/run-1/load/output.json"
    assert storage.get_stage_key("load", "x.json") == "workflow-v2/etl/run-1/load/x.json"
