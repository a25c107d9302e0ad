"""The problem record shared by the generator, the JSONL loader and the evaluation code."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MathProblem"]


@dataclass(frozen=True)
class MathProblem:
    """One math word problem with a numeric reference answer.

    Attributes:
        id: Identifier, unique within a data set (e.g. ``"gen-L3-s0-00042"``).
        question: The problem text shown to the model.
        answer: The canonical numeric answer string (``"42"``, ``"-3"``, ``"2.5"``, ``"1/3"``);
            see :func:`polar_vllm.data.answers.canonical_number`.
        level: Difficulty level (1..5 for generated problems), or ``None`` when unknown.
        source: Where the problem comes from (``"generated"``, a file stem, a data set name).
    """

    id: str
    question: str
    answer: str
    level: int | None
    source: str
