"""Streamed text: chunks pass straight through; the call is logged once when the stream ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

from workflow_engine.ai.providers.base import StreamEnd
from workflow_engine.ai.recording import CallLog, Recorder
from workflow_engine.ai.results import Usage

__all__ = ["AsyncTextStream", "TextStream"]

_DONE = object()


class TextStream:
    """Iterate for text chunks; :meth:`get_text` and :meth:`get_usage` finish the stream.

    The call is logged exactly once: when the stream ends, fails, or is closed early (then
    with ``status="incomplete"`` and the text received so far).
    """

    def __init__(
        self,
        open_stream: Callable[[], Iterator[str | StreamEnd]],
        recorder: Recorder,
        entry: CallLog,
    ) -> None:
        self._recorder = recorder
        self._entry = entry
        self._chunks: list[str] = []
        self._usage: Usage | None = None
        self._iterator = self._run(open_stream)

    def __iter__(self) -> Iterator[str]:
        return self._iterator

    def __next__(self) -> str:
        return next(self._iterator)

    def _run(self, open_stream: Callable[[], Iterator[str | StreamEnd]]) -> Iterator[str]:
        started = time.perf_counter()
        entry = self._entry
        entry.status = "incomplete"
        try:
            for item in open_stream():
                if isinstance(item, StreamEnd):
                    self._finish(item)
                else:
                    self._chunks.append(item)
                    yield item
        except Exception as exc:
            entry.status = "error"
            entry.extra["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            entry.response = entry.response or "".join(self._chunks)
            self._recorder.finish(entry, started)

    def _finish(self, end: StreamEnd) -> None:
        entry = self._entry
        cost = self._recorder.cost(entry.model_key, end.input_tokens, end.output_tokens, False)
        entry.succeed(
            "".join(self._chunks),
            end.input_tokens,
            end.output_tokens,
            cost,
            finish_reason=end.finish_reason,
        )
        self._usage = Usage(end.input_tokens, end.output_tokens, cost, end.finish_reason)

    def get_text(self) -> str:
        """Read the rest of the stream and return the whole text."""
        for _ in self._iterator:
            pass
        return "".join(self._chunks)

    def get_usage(self) -> Usage:
        """Read the rest of the stream and return its tokens and cost."""
        self.get_text()
        return self._usage or Usage(0, 0, 0.0)

    def close(self) -> None:
        """Stop reading; the call is logged as incomplete if it had not ended."""
        self._iterator.close()  # type: ignore[attr-defined]

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._chunks)


class AsyncTextStream:
    """The async face of a :class:`TextStream`: each chunk is read in a worker thread."""

    def __init__(self, stream: TextStream) -> None:
        self._stream = stream

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        chunk = await asyncio.to_thread(next, self._stream, _DONE)
        if chunk is _DONE:
            raise StopAsyncIteration
        assert isinstance(chunk, str)
        return chunk

    async def get_text(self) -> str:
        """Read the rest of the stream and return the whole text."""
        return await asyncio.to_thread(self._stream.get_text)

    async def get_usage(self) -> Usage:
        """Read the rest of the stream and return its tokens and cost."""
        return await asyncio.to_thread(self._stream.get_usage)

    async def aclose(self) -> None:
        """Stop reading (logged as incomplete if the stream had not ended)."""
        await asyncio.to_thread(self._stream.close)

    @property
    def text(self) -> str:
        """The text received so far."""
        return self._stream.text
