"""Local stand-ins for the OpenAI, Anthropic and Gemini HTTP APIs (the subset the helper uses).

Each fake answers on a pytest-httpserver with the response shapes the real services return
(recorded from their API references), keeps every request it got, can fail the next N
requests (429 / 5xx) to exercise SDK retries, and runs provider batches whose state the test
moves forward by hand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

Answer = Callable[[dict[str, Any]], str]

_BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(data), status=status, headers=headers, mimetype="application/json")


def _sse(events: list[tuple[str | None, dict[str, Any]]]) -> Response:
    lines = []
    for name, data in events:
        if name:
            lines.append(f"event: {name}")
        lines.append(f"data: {json.dumps(data)}")
        lines.append("")
    return Response("\n".join(lines) + "\n", mimetype="text/event-stream")


@dataclass
class Recorded:
    """One request a fake received."""

    method: str
    path: str
    body: Any
    headers: dict[str, str]


@dataclass
class FakeAPI:
    """Routing, request recording and injected failures shared by the three fakes."""

    server: HTTPServer
    answer: Answer = field(default=lambda body: "ok")
    requests: list[Recorded] = field(default_factory=list)
    failures: list[tuple[int, Any]] = field(default_factory=list)
    malformed: Any = None
    usage: tuple[int, int] = (12, 5)

    def __post_init__(self) -> None:
        self.server.expect_request(re.compile(".*")).respond_with_handler(self._handle)

    def fail_next(self, *statuses: int) -> None:
        """Answer the next requests with these error statuses, in order."""
        self.failures.extend((status, None) for status in statuses)

    def _handle(self, request: Request) -> Response:
        body: Any = request.get_data()
        if request.mimetype == "application/json" and body:
            body = json.loads(body)
        self.requests.append(
            Recorded(request.method, request.path, body, dict(request.headers.items()))
        )
        if self.failures:
            status, _ = self.failures.pop(0)
            return self.error(status)
        if self.malformed is not None and request.method == "POST":
            malformed, self.malformed = self.malformed, None
            return _json(malformed)
        return self.route(request, body)

    def error(self, status: int) -> Response:
        raise NotImplementedError

    def route(self, request: Request, body: Any) -> Response:
        raise NotImplementedError

    def posted(self, path_part: str) -> list[Any]:
        """Bodies of the POST requests whose path contains ``path_part``."""
        return [r.body for r in self.requests if r.method == "POST" and path_part in r.path]


# -- OpenAI --------------------------------------------------------------------------------------
@dataclass
class FakeOpenAI(FakeAPI):
    """``/v1/chat/completions`` (plain and streamed), ``/v1/embeddings``, files and batches."""

    files: dict[str, bytes] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return self.server.url_for("/v1")

    def error(self, status: int) -> Response:
        kind = "rate_limit_exceeded" if status == 429 else "server_error"
        payload = {"error": {"message": f"fake {status}", "type": kind, "code": kind}}
        return _json(payload, status, {"retry-after-ms": "1"})

    def route(self, request: Request, body: Any) -> Response:
        path = request.path
        if path == "/v1/chat/completions":
            if body.get("stream"):
                return self._stream(body)
            return _json(self.completion(body))
        if path == "/v1/embeddings":
            return _json(self._embeddings(body))
        if path == "/v1/files":
            return _json(self._upload(request))
        if path == "/v1/batches":
            return _json(self._create_batch(body))
        if match := re.fullmatch(r"/v1/batches/([^/]+)", path):
            return _json(self.batches[match.group(1)])
        if match := re.fullmatch(r"/v1/files/([^/]+)/content", path):
            return Response(self.files[match.group(1)], mimetype="application/octet-stream")
        return _json({"error": {"message": f"no route {path}"}}, 404)

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.answer(body)},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": self.usage[0],
                "completion_tokens": self.usage[1],
                "total_tokens": sum(self.usage),
            },
        }

    def _stream(self, body: dict[str, Any]) -> Response:
        text = self.answer(body)
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        chunks = [text[i : i + 4] for i in range(0, len(text), 4)]
        events = [
            (None, {**base, "choices": [{"index": 0, "delta": {"content": c}}]}) for c in chunks
        ]
        events.append(
            (None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        )
        usage = {"prompt_tokens": self.usage[0], "completion_tokens": self.usage[1]}
        events.append((None, {**base, "choices": [], "usage": usage}))
        response = _sse(events)
        response.set_data(response.get_data() + b"data: [DONE]\n\n")
        return response

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        size = body.get("dimensions") or 3
        data = [
            {"object": "embedding", "index": i, "embedding": [float(i)] * size}
            for i, _ in enumerate(body["input"])
        ]
        usage = {"prompt_tokens": 7 * len(data), "total_tokens": 7 * len(data)}
        return {"object": "list", "data": data, "model": body["model"], "usage": usage}

    def _upload(self, request: Request) -> dict[str, Any]:
        content = request.files["file"].read()
        file_id = f"file-in-{len(self.files) + 1}"
        self.files[file_id] = content
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": 1_700_000_000,
            "filename": "batch.jsonl",
            "purpose": request.form["purpose"],
            "status": "processed",
        }

    def _create_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        batch_id = f"batch_{len(self.batches) + 1}"
        self.batches[batch_id] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": body["endpoint"],
            "input_file_id": body["input_file_id"],
            "completion_window": body["completion_window"],
            "status": "validating",
            "created_at": 1_700_000_000,
            "output_file_id": None,
            "error_file_id": None,
        }
        return self.batches[batch_id]

    def batch_lines(self, batch_id: str) -> list[dict[str, Any]]:
        """The JSONL lines of the batch's input file."""
        content = self.files[self.batches[batch_id]["input_file_id"]].decode()
        return [json.loads(line) for line in content.splitlines() if line.strip()]

    def finish_batch(self, batch_id: str, *, failed_ids: tuple[str, ...] = ()) -> None:
        """Answer every request of the batch and mark it completed."""
        out, errors = [], []
        for line in self.batch_lines(batch_id):
            custom_id = line["custom_id"]
            if custom_id in failed_ids:
                error = {"code": "invalid_request", "message": f"{custom_id} was rejected"}
                errors.append({"id": "r", "custom_id": custom_id, "response": None, "error": error})
                continue
            response = {
                "status_code": 200,
                "request_id": "req",
                "body": self.completion(line["body"]),
            }
            out.append({"id": "r", "custom_id": custom_id, "response": response, "error": None})
        batch = self.batches[batch_id]
        batch["status"] = "completed"
        batch["output_file_id"] = self._store_lines(f"file-out-{batch_id}", out)
        if errors:
            batch["error_file_id"] = self._store_lines(f"file-err-{batch_id}", errors)

    def _store_lines(self, file_id: str, lines: list[dict[str, Any]]) -> str:
        self.files[file_id] = "".join(json.dumps(line) + "\n" for line in lines).encode()
        return file_id


# -- Anthropic -----------------------------------------------------------------------------------
@dataclass
class FakeAnthropic(FakeAPI):
    """``/v1/messages`` (plain and streamed) and Message Batches."""

    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    batch_requests: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return self.server.url_for("").rstrip("/")

    def error(self, status: int) -> Response:
        kind = "rate_limit_error" if status == 429 else "api_error"
        payload = {"type": "error", "error": {"type": kind, "message": f"fake {status}"}}
        return _json(payload, status, {"retry-after-ms": "1"})

    def route(self, request: Request, body: Any) -> Response:
        path = request.path
        if path == "/v1/messages":
            return self._stream(body) if body.get("stream") else _json(self.message(body))
        if path == "/v1/messages/batches":
            return _json(self._create_batch(body))
        if match := re.fullmatch(r"/v1/messages/batches/([^/]+)/results", path):
            lines = self.results[match.group(1)]
            content = "".join(json.dumps(line) + "\n" for line in lines)
            return Response(content, mimetype="application/binary")
        if match := re.fullmatch(r"/v1/messages/batches/([^/]+)", path):
            return _json(self.batches[match.group(1)])
        return _json({"type": "error", "error": {"message": f"no route {path}"}}, 404)

    def message(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": self.answer(body)}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": self.usage[0], "output_tokens": self.usage[1]},
        }

    def _stream(self, body: dict[str, Any]) -> Response:
        text = self.answer(body)
        start = {**self.message(body), "content": [], "stop_reason": None}
        start["usage"] = {"input_tokens": self.usage[0], "output_tokens": 1}
        events: list[tuple[str | None, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": start}),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
        ]
        for i in range(0, len(text), 4):
            delta = {"type": "text_delta", "text": text[i : i + 4]}
            events.append(
                ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
            )
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": self.usage[1]},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        return _sse(events)

    def _batch(self, batch_id: str, status: str, results_url: str | None) -> dict[str, Any]:
        count = len(self.batch_requests[batch_id])
        return {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": {
                "processing": 0 if results_url else count,
                "succeeded": count if results_url else 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            },
            "ended_at": "2025-01-01T01:00:00Z" if results_url else None,
            "created_at": "2025-01-01T00:00:00Z",
            "expires_at": "2025-01-02T00:00:00Z",
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": results_url,
        }

    def _create_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        batch_id = f"msgbatch_{len(self.batches) + 1}"
        self.batch_requests[batch_id] = body["requests"]
        self.batches[batch_id] = self._batch(batch_id, "in_progress", None)
        return self.batches[batch_id]

    def finish_batch(self, batch_id: str, *, failed_ids: tuple[str, ...] = ()) -> None:
        """Answer every request of the batch and mark it ended."""
        lines = []
        for request in self.batch_requests[batch_id]:
            custom_id = request["custom_id"]
            if custom_id in failed_ids:
                error = {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": f"{custom_id} refused"},
                }
                lines.append(
                    {"custom_id": custom_id, "result": {"type": "errored", "error": error}}
                )
            else:
                message = self.message(request["params"])
                lines.append(
                    {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}
                )
        self.results[batch_id] = lines
        url = self.server.url_for(f"/v1/messages/batches/{batch_id}/results")
        self.batches[batch_id] = self._batch(batch_id, "ended", url)


# -- Gemini --------------------------------------------------------------------------------------
@dataclass
class FakeGemini(FakeAPI):
    """``models/*:generateContent`` (plain, ``:streamGenerateContent``), embeddings, batches."""

    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    batch_requests: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return self.server.url_for("/")

    def error(self, status: int) -> Response:
        state = "RESOURCE_EXHAUSTED" if status == 429 else "INTERNAL"
        return _json(
            {"error": {"code": status, "message": f"fake {status}", "status": state}}, status
        )

    def route(self, request: Request, body: Any) -> Response:
        path = request.path
        if match := re.fullmatch(r"/v1\w*/models/([^:]+):(\w+)", path):
            return self._model_call(match.group(1), match.group(2), body)
        if match := re.fullmatch(r"/v1\w*/(batches/[^/]+)", path):
            return _json(self.batches[match.group(1)])
        return _json({"error": {"code": 404, "message": f"no route {path}"}}, 404)

    def _model_call(self, model: str, method: str, body: dict[str, Any]) -> Response:
        if method == "generateContent":
            return _json(self.content(body))
        if method == "streamGenerateContent":
            return self._stream(body)
        if method == "batchEmbedContents":
            return _json({"embeddings": [self._vector(r) for r in body["requests"]]})
        if method == "embedContent":
            return _json({"embedding": self._vector(body)})
        if method == "batchGenerateContent":
            return _json(self._create_batch(model, body))
        return _json({"error": {"code": 404, "message": f"no method {method}"}}, 404)

    def content(self, body: dict[str, Any], text: str | None = None) -> dict[str, Any]:
        return {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": text or self.answer(body)}]},
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": self.usage[0],
                "candidatesTokenCount": self.usage[1],
                "totalTokenCount": sum(self.usage),
            },
            "modelVersion": "gemini-2.5-flash",
        }

    def _stream(self, body: dict[str, Any]) -> Response:
        text = self.answer(body)
        pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
        events: list[tuple[str | None, dict[str, Any]]] = []
        for index, piece in enumerate(pieces):
            chunk = self.content(body, piece)
            if index < len(pieces) - 1:
                chunk.pop("usageMetadata")
                chunk["candidates"][0].pop("finishReason")
            events.append((None, chunk))
        return _sse(events)

    def _vector(self, request: dict[str, Any]) -> dict[str, Any]:
        size = request.get("outputDimensionality") or 3
        return {"values": [0.5] * size}

    def _create_batch(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        name = f"batches/b{len(self.batches) + 1}"
        requests = body["batch"]["inputConfig"]["requests"]["requests"]
        self.batch_requests[name] = requests
        self.batches[name] = {
            "name": name,
            "metadata": {
                "@type": _BATCH_TYPE,
                "model": f"models/{model}",
                "displayName": body["batch"].get("displayName"),
                "state": "BATCH_STATE_PENDING",
                "createTime": "2025-01-01T00:00:00Z",
                "name": name,
            },
        }
        return self.batches[name]

    def finish_batch(self, name: str, *, failed_ids: tuple[str, ...] = ()) -> None:
        """Answer every inline request and mark the batch succeeded."""
        responses = []
        for item in self.batch_requests[name]:
            key = item.get("metadata", {}).get("key")
            if key in failed_ids:
                error = {"code": 400, "message": f"{key} rejected"}
                responses.append({"error": error, "metadata": {"key": key}})
            else:
                responses.append(
                    {"response": self.content(item["request"]), "metadata": {"key": key}}
                )
        metadata = self.batches[name]["metadata"]
        metadata["state"] = "BATCH_STATE_SUCCEEDED"
        metadata["output"] = {"inlinedResponses": {"inlinedResponses": responses}}
