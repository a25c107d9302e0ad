"""The predictor in the front end: load once per process, predict in batches.

Concurrent server requests are batched: :class:`PredictionBatcher` collects the prompts that
arrive within one event-loop tick and runs the predictor once for all of them in a worker
thread, so the event loop keeps serving while it runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

from polar_vllm.program import Program
from polar_vllm.serving.metrics import observe_predictor_latency

__all__ = [
    "PREDICTED_PROGRAM",
    "QUESTION_TEXT",
    "PredictionBatcher",
    "PredictorService",
    "predictor_service",
]

QUESTION_TEXT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "polar_question_text", default=None
)
"""The text the predictor should read for the request being handled (e.g. the last user
message of a chat request), set by the serving layer."""

PREDICTED_PROGRAM: contextvars.ContextVar[Program | None] = contextvars.ContextVar(
    "polar_predicted_program", default=None
)
"""The program already predicted for the request being added (set around ``add_request``)."""


class PredictorService:
    """A loaded predictor checked against the served model; predicts one program per text."""

    def __init__(self, directory: str, depth: int, model_name: str) -> None:
        from polar_vllm.predictor import load_predictor

        self.directory = directory
        self.predictor = load_predictor(directory, expected_depth=depth, expected_model=model_name)

    def predict(self, texts: Sequence[str]) -> list[Program]:
        """The top program for each text, in order (one batched predictor call)."""
        from polar_vllm.predictor import predict_programs

        start = time.perf_counter()
        ranked = predict_programs(self.predictor, list(texts), top_k=1)
        observe_predictor_latency(time.perf_counter() - start)
        return [tuple(programs[0]) for programs in ranked]


@functools.cache
def predictor_service(directory: str, depth: int, model_name: str) -> PredictorService:
    """The process's predictor for ``directory`` (loaded on first use)."""
    return PredictorService(directory, depth, model_name)


class PredictionBatcher:
    """Batches ``predict`` calls made in the same event-loop tick into one predictor call."""

    def __init__(self, predict_batch: Callable[[Sequence[str]], list[Program]]) -> None:
        self.predict_batch = predict_batch
        self._pending: list[tuple[str, asyncio.Future[Program]]] = []

    async def predict(self, text: str) -> Program:
        """The predicted program of ``text``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Program] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush, loop)
        self._pending.append((text, future))
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._pending = self._pending, []
        texts = [text for text, _ in batch]
        work = loop.run_in_executor(None, self.predict_batch, texts)
        work.add_done_callback(functools.partial(_resolve, batch))


def _resolve(batch: list[tuple[str, asyncio.Future[Any]]], work: asyncio.Future[Any]) -> None:
    error = work.exception()
    for index, (_, future) in enumerate(batch):
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(work.result()[index])
