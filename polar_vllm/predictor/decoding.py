"""Decoding predictor logits into ranked PoLar-form programs.

1. Boundaries: layer ``i`` starts a segment when ``sigmoid(boundary_logit[i]) > threshold``;
   layer 0 always does. Segments longer than ``max_segment_len`` are cut into pieces of
   ``max_segment_len`` layers from the left (a 6-layer segment becomes 4 + 2).
2. Ops: a segment's score for op ``o`` is the mean over its layers of ``log_softmax(op
   logits)[o]`` (the op head is trained on every layer of a segment, see
   :mod:`polar_vllm.predictor.training`). Beam search over segments, in layer order, extends
   every beam with the segment's ``ops_per_segment`` best ops and keeps the ``beam_width`` best
   partial labellings by summed score.
3. Length-aware decoding subtracts ``length_penalty * executed_layers / depth`` from each
   labelling's score (additively, per segment, so the beam search stays exact): at equal scores
   the program that runs fewer layers ranks first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from polar_vllm.predictor.predictor_config import OP_SPACE, PredictorConfig
from polar_vllm.program import PolarForm, Program, SegmentOp

__all__ = ["DecodeOptions", "ScoredProgram", "decode", "decode_boundaries", "search_ops"]

_OPS = tuple(SegmentOp(op) for op in OP_SPACE)


@dataclass(frozen=True)
class DecodeOptions:
    """Decoding settings (defaults as in the paper: those of :class:`PredictorConfig`)."""

    boundary_threshold: float = PredictorConfig.boundary_threshold
    max_segment_len: int = PredictorConfig.max_segment_len
    beam_width: int = PredictorConfig.beam_width
    ops_per_segment: int = PredictorConfig.ops_per_segment
    length_aware: bool = False
    length_penalty: float = PredictorConfig.length_penalty


@dataclass(frozen=True)
class ScoredProgram:
    """A decoded labelling, its program and its score (summed op log-probabilities)."""

    form: PolarForm
    score: float

    @property
    def program(self) -> Program:
        """The layer program of :attr:`form`."""
        return self.form.to_program()


def decode_boundaries(
    boundary_logits: Sequence[float],
    threshold: float = DecodeOptions.boundary_threshold,
    max_segment_len: int = DecodeOptions.max_segment_len,
) -> tuple[bool, ...]:
    """Boundary bits from logits: ``p > threshold`` starts a segment, layer 0 always does,
    and segments longer than ``max_segment_len`` are split from the left."""
    probs = torch.sigmoid(torch.as_tensor(boundary_logits, dtype=torch.float64)).tolist()
    bits = []
    run = 0
    for index, p in enumerate(probs):
        start = index == 0 or p > threshold or run == max_segment_len
        run = 1 if start else run + 1
        bits.append(start)
    return tuple(bits)


def search_ops(
    op_log_probs: torch.Tensor, boundaries: tuple[bool, ...], options: DecodeOptions
) -> list[ScoredProgram]:
    """Beam search over segment ops; the beams, best first.

    ``op_log_probs`` is [D, 3] (log-softmax of the op logits, in :data:`OP_SPACE` order).
    """
    depth = len(boundaries)
    starts = [i for i, b in enumerate(boundaries) if b]
    segments = list(zip(starts, [*starts[1:], depth], strict=True))
    beams: list[tuple[float, tuple[SegmentOp, ...]]] = [(0.0, ())]
    for start, end in segments:
        scores = op_log_probs[start:end].double().mean(dim=0)
        if options.length_aware:
            passes = torch.tensor([op.passes for op in _OPS], dtype=torch.float64)
            scores = scores - options.length_penalty * passes * (end - start) / depth
        ranked = sorted(range(len(_OPS)), key=lambda o: (-float(scores[o]), o))
        chosen = ranked[: options.ops_per_segment]
        extended = [
            (score + float(scores[o]), (*ops, _OPS[o])) for score, ops in beams for o in chosen
        ]
        # Stable sort: ties keep beam order, then the op order of ``ranked``.
        extended.sort(key=lambda item: -item[0])
        beams = extended[: options.beam_width]
    return [
        ScoredProgram(PolarForm(boundaries, ops, options.max_segment_len), score)
        for score, ops in beams
    ]


def decode(
    boundary_logits: torch.Tensor, op_logits: torch.Tensor, options: DecodeOptions
) -> list[ScoredProgram]:
    """Ranked programs for one question from its boundary [D] and op [D, 3] logits."""
    boundaries = decode_boundaries(
        boundary_logits.tolist(), options.boundary_threshold, options.max_segment_len
    )
    return search_ops(torch.log_softmax(op_logits.double(), dim=-1), boundaries, options)
