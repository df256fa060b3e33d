"""The Flask example app (examples/flask_app) under Flask's test client, against real Postgres,
real Redis and a real ``celery worker`` process: runs started over HTTP complete, a run can be
cancelled, and a request whose transaction rolls back leaves no run and sends no message.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine

from examples.flask_app.app import create_app
from tests.integration.webapps import (
    Stack,
    broker_url,
    claim_wakeups,
    count_rows,
    engine_db,
    poll,
    stack,
)

__all__ = ["broker_url", "engine_db", "stack"]  # fixtures

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def make_app(engine_db: str, broker_url: str, **config: Any) -> Iterator[Flask]:
    app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": engine_db,
            "WORKFLOW_ENGINE_BROKER_URL": broker_url,
            **config,
        }
    )
    yield app
    with app.app_context():
        from examples.flask_app.app import db, engine

        engine.close()
        db.engine.dispose()


@pytest.fixture
def app(stack: Stack) -> Iterator[Flask]:
    """The example app on the module's database, broker and worker."""
    yield from make_app(stack.database_url, stack.broker_url)


@pytest.fixture
def http(app: Flask) -> FlaskClient:
    return app.test_client()


def wait_for_status(http: FlaskClient, run_id: str, *statuses: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        body: dict[str, Any] = http.get(f"/runs/{run_id}").get_json()
        return body if body["status"] in statuses else None

    return poll(reached, timeout=30, what=f"run {run_id} to be {' or '.join(statuses)}")


def test_a_run_started_over_http_completes(http: FlaskClient) -> None:
    response = http.post("/runs", json={"workflow": "noop-chain", "input": {"n": 1}})
    assert response.status_code == 201, response.get_json()
    run_id = response.get_json()["id"]

    run = wait_for_status(http, run_id, "COMPLETED", "FAILED", "CANCELLED")

    assert run["status"] == "COMPLETED", run
    assert run["output"] == {"n": 4}
    assert [stage["stage_id"] for stage in run["stages"]] == ["one", "two", "three"]
    assert all(stage["status"] == "COMPLETED" for stage in run["stages"])


def test_a_run_is_cancelled_over_http(http: FlaskClient) -> None:
    response = http.post(
        "/runs",
        json={
            "workflow": "document-processing",
            "input": {"title": "t", "text": "Our system runs every worker."},
            "config": {"classify": {"batch_seconds": 600}},  # suspends for ten minutes
        },
    )
    run_id = response.get_json()["id"]
    wait_for_status(http, run_id, "RUNNING")

    response = http.post(f"/runs/{run_id}/cancel", json={"reason": "changed my mind"})

    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"id": run_id, "cancelled": True}
    run = wait_for_status(http, run_id, "CANCELLED")
    assert run["status"] == "CANCELLED"
    again = http.post(f"/runs/{run_id}/cancel")
    assert again.status_code == 409


def test_a_rolled_back_request_leaves_no_run_and_sends_no_message(
    engine_db: str, broker_url: str, pg_engine: Engine
) -> None:
    # No worker consumes this queue, so every wake-up the app publishes stays countable.
    for app in make_app(engine_db, broker_url, WORKFLOW_ENGINE_QUEUE="unconsumed"):
        http = app.test_client()
        first = http.post("/runs", json={"workflow": "noop-chain", "reference": "order-7"})
        assert first.status_code == 201
        assert claim_wakeups(broker_url, "unconsumed") == 1

        duplicate = http.post("/runs", json={"workflow": "noop-chain", "reference": "order-7"})

        assert duplicate.status_code == 409, duplicate.get_json()
        assert count_rows(pg_engine, "workflow_runs") == 1
        assert count_rows(pg_engine, "submissions") == 1
        assert claim_wakeups(broker_url, "unconsumed") == 1


def test_unknown_runs_and_bad_input_get_json_errors(http: FlaskClient) -> None:
    assert http.get("/runs/nope").status_code == 404
    assert "not found" in http.get("/runs/nope").get_json()["error"]
    assert http.post("/runs/nope/cancel").status_code == 404
    bad = http.post("/runs", json={"workflow": "noop-chain", "input": {"n": "x"}})
    assert bad.status_code == 400
    assert "Invalid workflow input" in bad.get_json()["error"]
    assert http.post("/runs", json={"workflow": "nope"}).status_code == 400


def test_the_extension_reads_app_config_and_registers_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from workflow_engine.contrib.flask import WorkflowEngine, settings_from_config

    monkeypatch.delenv("WORKFLOW_ENGINE_DATABASE_URL", raising=False)
    app = Flask("configured")
    app.config.update(
        SQLALCHEMY_DATABASE_URI="postgresql+psycopg://app@db/app",
        WORKFLOW_ENGINE_BROKER_URL="redis://broker:6379/3",
        WORKFLOW_ENGINE_QUEUE="flask-queue",
        WORKFLOW_ENGINE_TICK_INTERVAL_SECONDS=2,
    )
    extension = WorkflowEngine()
    extension.init_app(app)  # the application-factory way

    with app.app_context():
        settings = extension.settings
        assert app.extensions["workflow_engine"].settings is settings
    assert settings.database_url == "postgresql+psycopg://app@db/app"  # the app's database
    assert (settings.broker_url, settings.queue) == ("redis://broker:6379/3", "flask-queue")
    assert settings.tick_interval_seconds == 2
    explicit = settings_from_config({"WORKFLOW_ENGINE_DATABASE_URL": "sqlite:///x.db"})
    assert explicit.database_url == "sqlite:///x.db"
    with pytest.raises(RuntimeError, match="init_app"), Flask("other").app_context():
        _ = extension.client
