"""What PoLar does to a request in the front end, before the engine sees it.

One :class:`PolarFrontEnd` per vLLM input processor: it holds the PoLar settings, the
predictor (loaded when the engine starts, so a bad predictor stops the start with a clear
message) and the batcher of concurrent predictions. :meth:`PolarFrontEnd.resolve` picks the
program of a request (its own, else the predicted one, else the default), and records the
request in the metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from polar_vllm.config import PROGRAM_ARG, PolarConfig
from polar_vllm.program import Program
from polar_vllm.request_programs import ResolvedProgram, resolve_request_program
from polar_vllm.serving.metrics import observe_request_program
from polar_vllm.serving.prediction import (
    PREDICTED_PROGRAM,
    QUESTION_TEXT,
    PredictionBatcher,
    predictor_service,
)

__all__ = ["PolarFrontEnd", "prompt_text"]


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
        if config.predictor is not None:
            self.service = predictor_service(config.predictor, config.depth, model_name)
            self.batcher = PredictionBatcher(self.service.predict)

    def needs_prediction(self, extra_args: Mapping[str, Any] | None) -> bool:
        """Whether a request with ``extra_args`` gets its program from the predictor."""
        return self.service is not None and PROGRAM_ARG not in (extra_args or {})

    def question(self, prompt: Any, decode: Any = None) -> str:
        """The text the predictor reads: the serving layer's question (the last user message
        of a chat request), else the prompt text, else the decoded prompt tokens."""
        text = QUESTION_TEXT.get() or prompt_text(prompt)
        if text is None and decode is not None:
            text = decode()
        return text or ""

    async def predict_async(self, text: str) -> Program:
        """The predicted program of ``text``, batched with concurrent requests."""
        assert self.batcher is not None
        return await self.batcher.predict(text)

    def resolve(self, extra_args: Mapping[str, Any] | None, question: Any) -> ResolvedProgram:
        """The checked program of a request (see :func:`resolve_request_program`).

        ``question`` is called for the predictor's input only when a prediction is needed and
        none was made already for this request (:data:`PREDICTED_PROGRAM`)."""
        predicted = None
        if self.needs_prediction(extra_args):
            predicted = PREDICTED_PROGRAM.get()
            if predicted is None:
                predicted = self.service.predict([question()])[0]
        resolved = resolve_request_program(extra_args, self.config, predicted)
        observe_request_program(len(resolved.program), resolved.source)
        return resolved
