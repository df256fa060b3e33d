"""JSON endpoints: start a run (``POST /runs``), read it (``GET /runs/<id>``), cancel it
(``POST /runs/<id>/cancel``).

``POST /runs`` body: ``{"workflow": "noop-chain", "input": {...}, "config": {...},
"priority": 5, "reference": "order-42"}`` (all optional). The run and the ``Submission`` row
are written in one ``transaction.atomic`` block: a reused ``reference`` fails the insert, the
block rolls back, and there is no run and no message to a worker.
"""

from __future__ import annotations

import json
from typing import Any

from django.db import IntegrityError, transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from submissions.models import Submission
from workflow_engine import (
    InvalidConfigError,
    InvalidInputError,
    RunNotFoundError,
    WorkflowNotFoundError,
)
from workflow_engine.contrib.django import create_run, get_client


def _body(request: HttpRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"{}")
    except json.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


@csrf_exempt
@require_POST
def start_run(request: HttpRequest) -> JsonResponse:
    body = _body(request)
    reference = body.get("reference")
    try:
        with transaction.atomic():
            run_id = create_run(
                body.get("workflow", "noop-chain"),
                body.get("input", {}),
                config=body.get("config"),
                priority=body.get("priority"),
            )
            if reference is not None:
                Submission.objects.create(reference=reference, run_id=run_id)
    except (WorkflowNotFoundError, InvalidInputError, InvalidConfigError) as error:
        return JsonResponse({"error": str(error)}, status=400)
    except IntegrityError:  # rolled back: no submission, no run, no wake-up
        return JsonResponse({"error": f"reference {reference!r} was already used"}, status=409)
    return JsonResponse({"id": run_id, "status": "PENDING"}, status=201)


@require_GET
def show_run(request: HttpRequest, run_id: str) -> JsonResponse:
    try:
        run = get_client().get_run(run_id)
    except RunNotFoundError as error:
        return JsonResponse({"error": str(error)}, status=404)
    return JsonResponse(run.model_dump(mode="json"))


@csrf_exempt
@require_POST
def cancel_run(request: HttpRequest, run_id: str) -> JsonResponse:
    try:
        cancelled = get_client().cancel(run_id, _body(request).get("reason"))
    except RunNotFoundError as error:
        return JsonResponse({"error": str(error)}, status=404)
    if not cancelled:
        return JsonResponse(
            {"id": run_id, "cancelled": False, "error": "the run has already finished"},
            status=409,
        )
    return JsonResponse({"id": run_id, "cancelled": True})


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})
