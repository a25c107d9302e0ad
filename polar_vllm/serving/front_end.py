"""What PoLar does to a request in the front end, before the engine sees it.

One :class:`PolarFrontEnd` per vLLM input processor: it holds the PoLar settings, the
predictor (loaded when the engine starts, so a bad predictor stops the start with a clear
message) and the batcher of concurrent predictions. :meth:`PolarFrontEnd.resolve` picks the
program of a request (its own, else the predicted one, else the default), and records the
request in the metrics.

A prediction that raises does not fail its request: the request runs the default program, a
warning names the error, and ``polar_predictor_failures_total`` counts it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from polar_vllm.engine.config import PROGRAM_ARG, QUESTION_ARG, PolarConfig
from polar_vllm.engine.request_programs import ResolvedProgram, resolve_request_program
from polar_vllm.program import Program
from polar_vllm.serving.metrics import observe_predictor_failure, observe_request_program
from polar_vllm.serving.prediction import (
    PREDICTED_PROGRAM,
    QUESTION_TEXT,
    Prediction,
    PredictionBatcher,
    predictor_service,
)

__all__ = ["PolarFrontEnd", "prompt_text"]

logger = logging.getLogger(f"vllm.{__name__}")  # vLLM's handler: the server's log


def prompt_text(prompt: Any) -> str | None:
    """The text of a vLLM prompt argument (a string, or a dict with ``"prompt"``), if any."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Mapping) and isinstance(prompt.get("prompt"), str):
        return prompt["prompt"]
    return None


class PolarFrontEnd:
    """PoLar's per-request work in one vLLM front end."""

    def __init__(self, config: PolarConfig, model_name: str) -> None:
        self.config = config
        self.service = None
        self.batcher = None
        self._prefetched: dict[str, Program] = {}
        if config.predictor is not None:
            self.service = predictor_service(
                config.predictor, config.depth, model_name, config.operating_point
            )
            self.batcher = PredictionBatcher(self.service.predict_each)

    def needs_prediction(self, extra_args: Mapping[str, Any] | None) -> bool:
        """Whether a request with ``extra_args`` gets its program from the predictor."""
        return self.service is not None and PROGRAM_ARG not in (extra_args or {})

    def question(
        self, prompt: Any, decode: Any = None, extra_args: Mapping[str, Any] | None = None
    ) -> str:
        """The text the predictor reads: the request's own ``polar_question``, else the serving
        layer's question (the last user message of a chat request), else the prompt text,
        else the decoded prompt tokens."""
        given = (extra_args or {}).get(QUESTION_ARG)
        # a question that is not text is refused later, by resolve_request_program
        text = (given if isinstance(given, str) else None) or QUESTION_TEXT.get()
        text = text or prompt_text(prompt)
        if text is None and decode is not None:
            text = decode()
        return text or ""

    @contextlib.contextmanager
    def prefetched(self, texts: Sequence[str]) -> Iterator[None]:
        """Within the block, requests whose question is one of ``texts`` use programs that were
        predicted for all of them in one batched predictor call (offline ``LLM.generate`` of
        many prompts); other texts are predicted one at a time as usual."""
        unique = list(dict.fromkeys(texts))
        if self.service is not None and unique:
            predicted = self.service.predict_each(unique)
            self._prefetched = {
                text: program
                for text, program in zip(unique, predicted, strict=True)
                if not isinstance(program, Exception)  # its requests try again, then fall back
            }
        try:
            yield
        finally:
            self._prefetched = {}

    def predict_one(self, text: str) -> Prediction:
        """The prediction for ``text``: a prefetched program, else a predictor call."""
        assert self.service is not None
        prefetched = self._prefetched.get(text)
        if prefetched is not None:
            return Prediction(prefetched)
        try:
            return Prediction(self.service.predict([text])[0])
        except Exception as error:
            return _failed(error)

    async def predict_async(self, text: str) -> Prediction:
        """The prediction for ``text``, batched with concurrent requests."""
        assert self.batcher is not None
        try:
            return Prediction(await self.batcher.predict(text))
        except Exception as error:
            return _failed(error)

    def choose(self, extra_args: Mapping[str, Any] | None, question: Any) -> ResolvedProgram:
        """The checked program of a request (see :func:`resolve_request_program`), recorded
        nowhere.

        ``question`` is called for the predictor's input only when a prediction is needed and
        none was made already for this request (:data:`PREDICTED_PROGRAM`)."""
        predicted = None
        if self.needs_prediction(extra_args):
            prediction = PREDICTED_PROGRAM.get()
            if prediction is None:
                prediction = self.predict_one(question())
            predicted = prediction.program
        return resolve_request_program(extra_args, self.config, predicted)

    def resolve(self, extra_args: Mapping[str, Any] | None, question: Any) -> ResolvedProgram:
        """:meth:`choose` for a request entering the engine, recorded in the metrics."""
        resolved = self.choose(extra_args, question)
        observe_request_program(len(resolved.program), resolved.source)
        return resolved


def _failed(error: Exception) -> Prediction:
    """The prediction of a request whose predictor call raised ``error``: counted, logged, and
    no program (the request runs the default program)."""
    observe_predictor_failure()
    reason = f"{type(error).__name__}: {error}"
    logger.warning("PoLar predictor failed (%s); the request runs the default program", reason)
    return Prediction(None, reason)
