"""Search labels -> weighted training targets.

A label file holds one :class:`~polar_vllm.search.labels.LabelRecord` per question, as the
search writes it.

Each valid program is parsed to its canonical PoLar form
(:func:`~polar_vllm.program.canonical_polar_form`); programs that do not fit the form are
dropped. Up to ``max_paths`` forms are kept per question, fewest executed layers first (ties in
file order). Weights: 1 per path, except the full program, which gets ``full_path_weight``
when the question also has a shorter valid program; then each question's weights are
normalised to sum to 1, so every question counts the same however many paths it has.
Questions left with no path are dropped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from polar_vllm.predictor.errors import PredictorError
from polar_vllm.predictor.predictor_config import OP_SPACE, model_matches
from polar_vllm.program import PolarForm, ProgramError, canonical_polar_form, full_program
from polar_vllm.search.labels import LabelRecord, read_label_records

__all__ = ["LabelledPath", "QuestionTargets", "build_targets", "read_labels"]


@dataclass(frozen=True)
class LabelledPath:
    """One training target: boundary bits, per-layer op class indices, and its weight."""

    boundaries: tuple[bool, ...]
    layer_ops: tuple[int, ...]
    weight: float


@dataclass(frozen=True)
class QuestionTargets:
    """The weighted targets of one question."""

    id: str
    question: str
    level: int | None
    paths: tuple[LabelledPath, ...]


def read_labels(paths: Iterable[str | os.PathLike[str]]) -> list[LabelRecord]:
    """Records of the label files ``paths``, in order; bad lines raise :class:`PredictorError`."""
    try:
        return read_label_records(list(paths))
    except ValueError as e:
        raise PredictorError(str(e)) from None


def _layer_ops(form: PolarForm) -> tuple[int, ...]:
    """The op class of every layer: the op of the segment that holds it."""
    ops = []
    for (start, end), op in zip(form.segments(), form.ops, strict=True):
        ops.extend([OP_SPACE.index(op.value)] * (end - start))
    return tuple(ops)


def build_targets(
    records: Iterable[LabelRecord],
    *,
    model: str,
    depth: int,
    max_paths: int = 50,
    full_path_weight: float = 0.3,
    max_segment_len: int = 4,
) -> list[QuestionTargets]:
    """Weighted canonical targets of every question with at least one PoLar-form path.

    Raises :class:`PredictorError` when a record was searched on another model or depth.
    """
    full = full_program(depth)
    out = []
    for record in records:
        if record.depth != depth:
            raise PredictorError(
                f"label {record.id!r} is for a model of depth {record.depth}, expected {depth}"
            )
        if not model_matches(model, record.model):
            raise PredictorError(
                f"label {record.id!r} is for model {record.model!r}, expected {model!r}"
            )
        forms: dict[tuple[int, ...], PolarForm] = {}
        for program in record.valid_programs:
            try:
                form = canonical_polar_form(program, depth, max_segment_len)
            except ProgramError as e:
                raise PredictorError(f"label {record.id!r}: {e}") from None
            if form is not None:
                forms.setdefault(tuple(program), form)
        kept = sorted(forms.items(), key=lambda item: len(item[0]))[:max_paths]
        if not kept:
            continue
        has_shorter = any(len(program) < depth for program, _ in kept)
        raw = [full_path_weight if program == full and has_shorter else 1.0 for program, _ in kept]
        total = sum(raw)
        paths = tuple(
            LabelledPath(form.boundaries, _layer_ops(form), weight / total)
            for (_, form), weight in zip(kept, raw, strict=True)
        )
        out.append(QuestionTargets(record.id, record.question, record.level, paths))
    return out
