"""The Django example project (examples/django_project) under Django's test client, against
real Postgres, real Redis and a real ``celery worker``: runs started over HTTP complete, a run
can be cancelled, a request whose ``transaction.atomic`` block rolls back leaves no run and
sends no message, the read-only admin renders for a staff user, and the management commands
work.

Django is configured once for this module (its settings are process-wide): the project's
settings read ``DATABASE_URL`` and ``WORKFLOW_ENGINE_BROKER_URL``, pointed at the module's
database (which gets Django's tables through ``migrate`` and the engine's through
``workflow_engine_migrate``) and broker.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.e2e.harness import REPO_ROOT
from tests.integration.webapps import (
    Stack,
    claim_wakeups,
    count_rows,
    fresh_database,
    poll,
    redis_database,
)
from tests.integration.webapps import celery_worker as start_worker

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

PROJECT = REPO_ROOT / "examples" / "django_project"


@pytest.fixture(scope="module")
def django_stack(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Django set up on a fresh database (migrated by both migrate commands) and a worker."""
    import django
    from django.core.management import call_command
    from django.test.utils import setup_test_environment, teardown_test_environment

    with (
        pytest.MonkeyPatch.context() as patch,
        fresh_database(database_url, migrate=False) as db,
        redis_database(redis_url) as broker,
    ):
        patch.syspath_prepend(str(PROJECT))
        patch.setenv("DJANGO_SETTINGS_MODULE", "mysite.settings")
        patch.setenv("DATABASE_URL", db)
        patch.setenv("WORKFLOW_ENGINE_BROKER_URL", broker)
        patch.delenv("WORKFLOW_ENGINE_DATABASE_URL", raising=False)
        django.setup()
        setup_test_environment()
        out = io.StringIO()
        call_command("migrate", verbosity=0)
        call_command("workflow_engine_migrate", stdout=out)
        assert "workflow engine schema is up to date" in out.getvalue()
        call_command("workflow_engine_migrate", stdout=io.StringIO())  # safe to run again
        workdir = tmp_path_factory.mktemp("django-worker")
        try:
            # Like a real deployment: the worker runs the app built from Django's settings
            # (DJANGO_SETTINGS_MODULE, the project on its path, the database from DATABASE_URL).
            with start_worker(
                None, broker, workdir, app="workflow_engine.contrib.django", pythonpath=(PROJECT,)
            ) as worker:
                yield Stack(db, broker, worker)
        finally:
            from django.db import connections

            from workflow_engine.contrib.django import reset_client

            reset_client()
            connections.close_all()
            teardown_test_environment()
            for name in [m for m in sys.modules if m.startswith(("mysite", "submissions"))]:
                del sys.modules[name]


@pytest.fixture
def http(django_stack: Stack) -> Any:
    from django.test import Client

    return Client()


@pytest.fixture
def db_engine(django_stack: Stack) -> Iterator[Engine]:
    engine = django_stack.engine()
    yield engine
    engine.dispose()


def wait_for_status(http: Any, run_id: str, *statuses: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        body: dict[str, Any] = http.get(f"/runs/{run_id}").json()
        return body if body["status"] in statuses else None

    return poll(reached, timeout=30, what=f"run {run_id} to be {' or '.join(statuses)}")


def start(http: Any, **body: Any) -> Any:
    return http.post("/runs", body, content_type="application/json")


def test_a_run_started_over_http_completes(http: Any) -> None:
    response = start(http, workflow="noop-chain", input={"n": 10}, reference="django-1")
    assert response.status_code == 201, response.json()
    run_id = response.json()["id"]

    run = wait_for_status(http, run_id, "COMPLETED", "FAILED", "CANCELLED")

    assert run["status"] == "COMPLETED", run
    assert run["output"] == {"n": 13}
    from submissions.models import Submission

    submission = Submission.objects.get(reference="django-1")
    assert submission.run is not None and submission.run.status == "COMPLETED"
    assert [s.stage_id for s in submission.run.stages.order_by("execution_group")] == [
        "one",
        "two",
        "three",
    ]


def test_a_run_is_cancelled_over_http(http: Any) -> None:
    response = start(
        http,
        workflow="document-processing",
        input={"title": "t", "text": "Our system runs every worker."},
        config={"classify": {"batch_seconds": 600}},
    )
    run_id = response.json()["id"]
    wait_for_status(http, run_id, "RUNNING")

    response = http.post(f"/runs/{run_id}/cancel", {"reason": "no"}, "application/json")

    assert response.status_code == 200, response.json()
    assert response.json() == {"id": run_id, "cancelled": True}
    assert wait_for_status(http, run_id, "CANCELLED")["status"] == "CANCELLED"
    assert http.post(f"/runs/{run_id}/cancel").status_code == 409


def test_a_rolled_back_request_leaves_no_run_and_sends_no_message(
    http: Any, db_engine: Engine, django_stack: Stack
) -> None:
    from django.test import override_settings

    # A queue nobody consumes, so each wake-up the project publishes stays countable.
    options = {"BROKER_URL": django_stack.broker_url, "QUEUE": "unconsumed"}
    with override_settings(WORKFLOW_ENGINE=options):
        runs_before = count_rows(db_engine, "workflow_runs")
        first = start(http, workflow="noop-chain", reference="order-7")
        assert first.status_code == 201
        assert claim_wakeups(django_stack.broker_url, "unconsumed") == 1

        duplicate = start(http, workflow="noop-chain", reference="order-7")

        assert duplicate.status_code == 409, duplicate.json()
        assert count_rows(db_engine, "workflow_runs") == runs_before + 1
        assert claim_wakeups(django_stack.broker_url, "unconsumed") == 1


def test_create_run_outside_atomic_creates_at_once(django_stack: Stack, db_engine: Engine) -> None:
    from workflow_engine.contrib.django import create_run, get_client

    run_id = create_run("noop-chain", {"n": 0})  # autocommit: its own transaction

    assert get_client().wait(run_id, timeout=30).status == "COMPLETED"


def test_bad_requests_get_json_errors(http: Any) -> None:
    assert http.get("/runs/nope").status_code == 404
    assert http.post("/runs/nope/cancel").status_code == 404
    bad = start(http, workflow="noop-chain", input={"n": "x"})
    assert bad.status_code == 400
    assert "Invalid workflow input" in bad.json()["error"]


def test_the_admin_shows_runs_and_stages_read_only(http: Any, db_engine: Engine) -> None:
    from django.contrib.auth.models import User

    run_id = start(http, workflow="noop-chain", input={"n": 1}).json()["id"]
    wait_for_status(http, run_id, "COMPLETED")
    staff = User.objects.create(username="admin", is_staff=True, is_superuser=True)
    http.force_login(staff)

    pages = {
        "/admin/": "Workflow engine",
        "/admin/workflow_engine/workflowrun/": run_id,
        f"/admin/workflow_engine/workflowrun/{run_id}/change/": "three",
        "/admin/workflow_engine/workflowstage/": run_id,
        "/admin/workflow_engine/workflowrun/?status__exact=COMPLETED": run_id,
    }
    for url, expected in pages.items():
        response = http.get(url)
        assert response.status_code == 200, url
        assert expected in response.content.decode(), url
    stage_id = http.get("/admin/workflow_engine/workflowstage/").context["cl"].result_list[0].pk
    assert http.get(f"/admin/workflow_engine/workflowstage/{stage_id}/change/").status_code == 200
    # read-only: no add, no delete, no saving changes
    assert http.get("/admin/workflow_engine/workflowrun/add/").status_code == 403
    assert http.get(f"/admin/workflow_engine/workflowrun/{run_id}/delete/").status_code == 403
    page = http.get(f"/admin/workflow_engine/workflowrun/{run_id}/change/").content.decode()
    assert 'name="_save"' not in page


def test_the_runs_command_lists_and_shows_runs(http: Any) -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    run_id = start(http, workflow="noop-chain", input={"n": 2}).json()["id"]
    wait_for_status(http, run_id, "COMPLETED")

    listing = io.StringIO()
    call_command("workflow_engine_runs", "list", "--workflow", "noop-chain", stdout=listing)
    shown = io.StringIO()
    call_command("workflow_engine_runs", "show", run_id, "--json", stdout=shown)

    assert run_id in listing.getvalue()
    assert '"status": "COMPLETED"' in shown.getvalue()
    with pytest.raises(CommandError, match="not found"):
        call_command("workflow_engine_runs", "show", "no-such-run", stdout=io.StringIO())
