"""The predictor in the front end: load once per process, predict in batches.

Concurrent server requests are batched: :class:`PredictionBatcher` collects the prompts that
arrive within one event-loop tick and runs the predictor once for all of them in a worker
thread, so the event loop keeps serving while it runs.

A predictor can fail at request time (a prompt it cannot encode, an encoder it was configured
wrongly for). :meth:`PredictorService.predict_each` then retries the batch's texts one by one,
so only the texts that fail get an error; the front end runs those requests with the default
program (:class:`Prediction` with no program).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from polar_vllm.program import Program
from polar_vllm.serving.metrics import observe_predictor_latency

__all__ = [
    "PREDICTED_PROGRAM",
    "QUESTION_TEXT",
    "Prediction",
    "PredictionBatcher",
    "PredictorService",
    "predictor_service",
]

QUESTION_TEXT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "polar_question_text", default=None
)
"""The text the predictor should read for the request being handled (e.g. the last user
message of a chat request), set by the serving layer."""


@dataclass(frozen=True)
class Prediction:
    """The predictor's answer for one request."""

    program: Program | None
    """The predicted program; ``None`` when the predictor failed (the request runs the default
    program)."""
    error: str | None = None
    """Why the predictor failed, when it did."""


PREDICTED_PROGRAM: contextvars.ContextVar[Prediction | None] = contextvars.ContextVar(
    "polar_predicted_program", default=None
)
"""The prediction already made for the request being added (set around ``add_request``)."""


class PredictorService:
    """A loaded predictor checked against the served model; predicts one program per text."""

    def __init__(
        self, directory: str, depth: int, model_name: str, operating_point: str | None = None
    ) -> None:
        from polar_vllm.predictor import load_predictor

        self.directory = directory
        self.predictor = load_predictor(
            directory,
            expected_depth=depth,
            expected_model=model_name,
            operating_point=operating_point,
        )

    def predict(self, texts: Sequence[str]) -> list[Program]:
        """The top program for each text, in order (one batched predictor call)."""
        from polar_vllm.predictor import predict_programs

        start = time.perf_counter()
        ranked = predict_programs(self.predictor, list(texts), top_k=1)
        observe_predictor_latency(time.perf_counter() - start)
        return [tuple(programs[0]) for programs in ranked]

    def predict_each(self, texts: Sequence[str]) -> list[Program | Exception]:
        """:meth:`predict` for each text, in order; if the batch fails, each text is tried
        alone, and a text that still fails gets its exception in place of a program."""
        try:
            return list(self.predict(texts))
        except Exception as error:  # one bad text must not fail the texts batched with it
            if len(texts) == 1:
                return [error]
            return [_exception_of(self.predict, text) for text in texts]


def _exception_of(
    predict: Callable[[Sequence[str]], list[Program]], text: str
) -> Program | Exception:
    try:
        return predict([text])[0]
    except Exception as error:
        return error


@functools.cache
def predictor_service(
    directory: str, depth: int, model_name: str, operating_point: str | None = None
) -> PredictorService:
    """The process's predictor for ``directory`` at ``operating_point`` (loaded on first use)."""
    return PredictorService(directory, depth, model_name, operating_point)


class PredictionBatcher:
    """Batches ``predict`` calls made in the same event-loop tick into one predictor call.

    ``predict_batch`` gives one program per text, or an exception for a text that failed
    (:meth:`PredictorService.predict_each`); that text's :meth:`predict` raises it."""

    def __init__(self, predict_batch: Callable[[Sequence[str]], list[Program | Exception]]) -> None:
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
        result = error if error is not None else work.result()[index]
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
