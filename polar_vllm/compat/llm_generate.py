"""PoLar in vLLM's offline ``LLM`` (vLLM 0.32): batched predictions for ``LLM.generate``, and
which program a prompt runs (:func:`program_for_prompt`, public as
:func:`polar_vllm.polar_program`).

``LLM.generate`` hands its prompts to the input processor one at a time. With a predictor,
the wrapper first predicts the programs of every prompt that carries no program of its own in
ONE predictor call, so a large offline batch pays the encoder once per batch, not once per
prompt. Without PoLar, or without a predictor, it calls through unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from polar_vllm.engine.config import PROGRAM_ARG, QUESTION_ARG
from polar_vllm.engine.request_programs import ResolvedProgram

from .input_processor import polar_front_end

__all__ = ["polar_generate", "program_for_prompt"]


def _as_list(value: Any, count: int) -> list[Any]:
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, dict)):
        return list(value)
    return [value] * count


def _questions_to_predict(front_end: Any, prompts: Any, sampling_params: Any) -> list[str]:
    """The texts of the prompts whose requests will ask the predictor for a program."""
    prompt_list = _as_list(prompts, 1)
    params_list = _as_list(sampling_params, len(prompt_list))
    texts = []
    for prompt, params in zip(prompt_list, params_list, strict=False):
        extra_args = getattr(params, "extra_args", None)
        text = front_end.question(prompt, extra_args=extra_args)
        if text and front_end.needs_prediction(extra_args):  # token-only prompts: one by one
            texts.append(text)
    return texts


def polar_generate(generate: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``LLM.generate`` to predict the programs of all its prompts in one batch."""

    @functools.wraps(generate)
    def wrapper(self: Any, prompts: Any, sampling_params: Any = None, *args: Any, **kwargs: Any):
        front_end = polar_front_end(self.llm_engine.input_processor)
        if front_end is None or front_end.service is None:
            return generate(self, prompts, sampling_params, *args, **kwargs)
        with front_end.prefetched(_questions_to_predict(front_end, prompts, sampling_params)):
            return generate(self, prompts, sampling_params, *args, **kwargs)

    return wrapper


def program_for_prompt(
    llm: Any,
    prompt: str,
    program: str | Sequence[int] | None = None,
    question: str | None = None,
) -> ResolvedProgram:
    """The program ``prompt`` runs in ``llm``: see :func:`polar_vllm.polar_program`."""
    front_end = polar_front_end(llm.llm_engine.input_processor)
    if front_end is None:
        raise ValueError("PoLar is off for this LLM: pass additional_config={'polar': {...}}")
    extra_args: dict[str, Any] = {} if program is None else {PROGRAM_ARG: program}
    if question is not None:
        extra_args[QUESTION_ARG] = question
    return front_end.choose(extra_args, lambda: front_end.question(prompt, extra_args=extra_args))
