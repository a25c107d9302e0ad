"""Which program PoLar runs for a prompt in an offline ``vllm.LLM``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from polar_vllm.config import PROGRAM_ARG, QUESTION_ARG
from polar_vllm.request_programs import ResolvedProgram

__all__ = ["polar_program"]


def polar_program(
    llm: Any,
    prompt: str,
    program: str | Sequence[int] | None = None,
    question: str | None = None,
) -> ResolvedProgram:
    """The program a request with ``prompt`` (and its own ``program`` or predictor
    ``question``, if given) runs in ``llm``, and its source (``request``, ``predictor`` or
    ``default``).

    ``len(result.program)`` is the executed-layer count and ``result.text`` the canonical text.
    Raises ``ValueError`` when PoLar is off for ``llm``, and
    :class:`~polar_vllm.program.ProgramError` for a bad ``program``.
    """
    from polar_vllm.compat.input_processor import polar_front_end

    front_end = polar_front_end(llm.llm_engine.input_processor)
    if front_end is None:
        raise ValueError("PoLar is off for this LLM: pass additional_config={'polar': {...}}")
    extra_args: dict[str, Any] = {} if program is None else {PROGRAM_ARG: program}
    if question is not None:
        extra_args[QUESTION_ARG] = question
    return front_end.choose(extra_args, lambda: front_end.question(prompt, extra_args=extra_args))
