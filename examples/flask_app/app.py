"""A Flask app that starts, shows and cancels workflow runs over JSON.

Run it (with Postgres, Redis and a worker, see the README's "Use it from Flask")::

    export DATABASE_URL=postgresql+psycopg://app@localhost/app
    export WORKFLOW_ENGINE_BROKER_URL=redis://localhost:6379/0
    workflow-engine --database-url "$DATABASE_URL" db upgrade
    flask --app examples.flask_app.app run

    curl -X POST localhost:5000/runs -H 'content-type: application/json' \\
         -d '{"workflow": "noop-chain", "input": {"n": 1}, "reference": "order-1"}'
    curl localhost:5000/runs/RUN_ID
    curl -X POST localhost:5000/runs/RUN_ID/cancel

``POST /runs`` records a ``Submission`` row (the app's own table) and creates the run in the
same transaction: a second request with the same ``reference`` fails on the unique constraint
at commit, rolls back, and leaves no run behind and no message on the broker.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from flask import Flask, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import DateTime, String
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from werkzeug.exceptions import HTTPException

from workflow_engine import (
    InvalidConfigError,
    InvalidInputError,
    RunNotFoundError,
    WorkflowNotFoundError,
)
from workflow_engine.contrib.flask import WorkflowEngine


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
engine = WorkflowEngine(db=db)


class Submission(db.Model):
    """Who asked for which run: the app's own data, written with the run."""

    __tablename__ = "submissions"

    id: Mapped[int] = mapped_column(primary_key=True)
    reference: Mapped[str] = mapped_column(String(100), unique=True)
    run_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=lambda: datetime.now(UTC)
    )


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The app. ``WORKFLOW_ENGINE_*`` settings come from ``config``, else the environment;
    the engine shares the app's database (``DATABASE_URL``) unless told otherwise.
    """
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get(
        "DATABASE_URL", "postgresql+psycopg://postgres@localhost/postgres"
    )
    app.config.update(config or {})
    db.init_app(app)
    engine.init_app(app)
    with app.app_context():
        db.create_all()  # the app's own tables; the engine's come from `workflow-engine db upgrade`
        db.engine.dispose()  # no pooled connection may cross a fork (gunicorn --preload)
    _routes(app)
    return app


def _routes(app: Flask) -> None:
    @app.post("/runs")
    def start_run() -> Any:
        body = request.get_json(force=True, silent=True) or {}
        workflow = body.get("workflow", "noop-chain")
        reference = body.get("reference")
        try:
            run_id = engine.create_run(
                workflow,
                body.get("input", {}),
                config=body.get("config"),
                priority=body.get("priority"),
            )
        except (WorkflowNotFoundError, InvalidInputError, InvalidConfigError) as error:
            return jsonify(error=str(error)), 400
        if reference is not None:
            db.session.add(Submission(reference=reference, run_id=run_id))
        try:
            db.session.commit()  # the run and the submission, together; then the wake-up
        except IntegrityError:
            db.session.rollback()  # no submission, no run, no message
            return jsonify(error=f"reference {reference!r} was already used"), 409
        return jsonify(id=run_id, status="PENDING"), 201

    @app.get("/runs/<run_id>")
    def show_run(run_id: str) -> Any:
        return jsonify(engine.get_run(run_id).model_dump(mode="json"))

    @app.post("/runs/<run_id>/cancel")
    def cancel_run(run_id: str) -> Any:
        body = request.get_json(force=True, silent=True) or {}
        if not engine.cancel(run_id, body.get("reason")):
            return jsonify(id=run_id, cancelled=False, error="the run has already finished"), 409
        return jsonify(id=run_id, cancelled=True)

    @app.get("/health")
    def health() -> Any:
        return jsonify(status="ok")

    @app.errorhandler(RunNotFoundError)
    def run_not_found(error: RunNotFoundError) -> Any:
        return jsonify(error=str(error)), 404

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        return jsonify(error=error.description), error.code
