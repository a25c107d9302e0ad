"""Choosing one program from a fixed candidate set, and the operating points that tune it.

A candidate predictor (:mod:`polar_vllm.predictor.candidate_head`) gives, for each question,
the probability ``p[c]`` that candidate program ``c`` answers it right. One operating point
(:class:`OperatingPoint`) turns those into a choice:

1. utility ``u[c] = p[c] - length_penalty * executed_layers(c) / D``; the best-utility
   candidate ``c*`` is the proposal (``length_penalty`` 0: the most likely right; larger:
   shorter programs win more often);
2. fallback: the proposal runs only when ``p[c*] > p[full] + margin``, else the full program
   does. A margin of 1 or more therefore always gives the full program (``p`` is in [0, 1]);
   a negative margin lets a shorter program replace the full one at a small predicted loss.

Operating points are chosen on validation questions whose candidates were all evaluated
(dense labels): :func:`calibrate` scores a grid of points by lookup; :func:`pick_point` takes
the most accurate point under a mean-layer budget, :func:`pick_served` the cheapest one in
served layer-tokens (:mod:`.served_cost`) that is surely at least as accurate as the full
program.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "FALLBACK_ALWAYS",
    "MARGINS",
    "PENALTIES",
    "CalibratedPoint",
    "OperatingPoint",
    "calibrate",
    "choose",
    "grid_choices",
    "guard_applies",
    "pick_point",
    "pick_served",
    "rank",
]

PENALTIES: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
"""The ``length_penalty`` grid :func:`calibrate` tries."""

MARGINS: tuple[float, ...] = tuple(round(-0.3 + 0.025 * i, 3) for i in range(53))
"""The ``margin`` grid :func:`calibrate` tries (-0.3 .. 1.0)."""

FALLBACK_ALWAYS = 1.0
"""A margin at which every question runs the full program."""

CONFIDENCE_Z = 1.645
"""The one-sided normal quantile (95%) of the lower bound :func:`calibrate` puts on a point's
accuracy gain over the full program."""


@dataclass(frozen=True)
class OperatingPoint:
    """How a candidate predictor trades accuracy for executed layers (see the module doc)."""

    length_penalty: float = 0.0
    margin: float = 0.0


def guard_applies(point: OperatingPoint) -> bool:
    """Whether a familiarity guard's fallback program replaces ``point``'s choice on the
    questions it finds unfamiliar: at every point except those that always run the full
    program (a margin of :data:`FALLBACK_ALWAYS` or more), whose promise it must not break."""
    return point.margin < FALLBACK_ALWAYS


@dataclass(frozen=True)
class CalibratedPoint:
    """An operating point and what it gave on the calibration questions: ``gain_bound`` is a
    one-sided 95% lower bound on its accuracy gain over the full program (paired, per question),
    ``relative_cost`` its served layer-tokens over the full program's (``None`` unless the
    calibration priced the candidates)."""

    point: OperatingPoint
    accuracy: float
    mean_layers: float
    full_share: float
    gain_bound: float
    relative_cost: float | None = None


def _utilities(
    probs: torch.Tensor, lengths: torch.Tensor, depth: int, point: OperatingPoint
) -> torch.Tensor:
    return probs - point.length_penalty * lengths.to(probs.dtype) / depth


def choose(
    probs: torch.Tensor,
    lengths: torch.Tensor,
    depth: int,
    full_index: int,
    point: OperatingPoint,
) -> torch.Tensor:
    """The chosen candidate index of each question: ``probs`` [Q, C], ``lengths`` [C] (or
    [Q, C]: a per-question cost in layers, as an analysis that knows each answer's cost uses)."""
    proposal = _utilities(probs, lengths, depth, point).argmax(dim=1)
    confident = probs.gather(1, proposal[:, None])[:, 0] > probs[:, full_index] + point.margin
    return torch.where(confident, proposal, torch.full_like(proposal, full_index))


def rank(
    probs: torch.Tensor,
    lengths: torch.Tensor,
    depth: int,
    full_index: int,
    point: OperatingPoint,
) -> list[list[int]]:
    """Candidate indices of each question, best first: the choice, then the others by
    utility (ties by index)."""
    chosen = choose(probs, lengths, depth, full_index, point).tolist()
    order = torch.argsort(-_utilities(probs, lengths, depth, point), dim=1, stable=True).tolist()
    return [[c, *[o for o in row if o != c]] for c, row in zip(chosen, order, strict=True)]


def grid_choices(
    probs: torch.Tensor,
    lengths: torch.Tensor,
    depth: int,
    full_index: int,
    *,
    penalties: Sequence[float] = PENALTIES,
    margins: Sequence[float] = MARGINS,
) -> Iterator[tuple[OperatingPoint, torch.Tensor]]:
    """Every point of the calibration grid with what :func:`choose` picks there for each
    question."""
    for penalty in penalties:
        for margin in margins:
            point = OperatingPoint(float(penalty), float(margin))
            yield point, choose(probs, lengths, depth, full_index, point)


def calibrate(
    probs: torch.Tensor,
    correct: torch.Tensor,
    lengths: torch.Tensor,
    depth: int,
    full_index: int,
    *,
    penalties: Sequence[float] = PENALTIES,
    margins: Sequence[float] = MARGINS,
    costs: torch.Tensor | None = None,
) -> list[CalibratedPoint]:
    """Accuracy and mean executed layers of every grid point on calibration questions whose
    candidates' correctness ``correct`` [Q, C] is known, by lookup (nothing is run); with
    ``costs`` [Q, C] (each candidate's served layer-tokens on each question) also its cost
    relative to the full program's."""
    rows = torch.arange(probs.shape[0])
    full_right = correct[:, full_index].float()
    full_cost = None if costs is None else costs[:, full_index].sum()
    out = []
    for point, chosen in grid_choices(
        probs, lengths, depth, full_index, penalties=penalties, margins=margins
    ):
        right = correct[rows, chosen].float()
        gain = right - full_right  # -1, 0 or 1 per question
        spread = float(gain.std()) if len(gain) > 1 else 0.0
        relative = None if costs is None else float(costs[rows, chosen].sum() / full_cost)
        out.append(
            CalibratedPoint(
                point,
                accuracy=float(right.mean()),
                mean_layers=float(lengths[chosen].float().mean()),
                full_share=float((chosen == full_index).float().mean()),
                gain_bound=float(gain.mean()) - CONFIDENCE_Z * spread / len(gain) ** 0.5,
                relative_cost=relative,
            )
        )
    return out


def pick_point(points: Sequence[CalibratedPoint], max_mean_layers: float) -> CalibratedPoint:
    """The most accurate point whose mean executed layers are within ``max_mean_layers``
    (ties: fewer layers, then the larger margin, the safer choice)."""
    fitting = [p for p in points if p.mean_layers <= max_mean_layers + 1e-9]
    if not fitting:
        raise ValueError(f"no calibrated point runs at most {max_mean_layers} layers on average")
    return max(fitting, key=lambda p: (round(p.accuracy, 9), -p.mean_layers, p.point.margin))


def pick_served(
    points: Sequence[CalibratedPoint], max_mean_layers: float, min_accuracy: float = 0.0
) -> CalibratedPoint:
    """The cheapest point in served layer-tokens whose mean executed layers are within
    ``max_mean_layers``, whose accuracy gain over the full program is surely positive
    (``gain_bound`` > 0) and whose accuracy beats ``min_accuracy`` (e.g. the best static
    program within the same layers); ties: the more accurate. Points must carry their
    ``relative_cost`` (:func:`calibrate` with ``costs``)."""
    if any(p.relative_cost is None for p in points):
        raise ValueError("pick_served needs points calibrated with costs")
    fitting = [
        p
        for p in points
        if p.mean_layers <= max_mean_layers + 1e-9
        and p.gain_bound > 0.0
        and p.accuracy > min_accuracy
    ]
    if not fitting:
        raise ValueError(
            f"no calibrated point within {max_mean_layers} layers on average is surely more "
            f"accurate than the full program and than {min_accuracy:.3f}"
        )
    return min(fitting, key=lambda p: (round(p.relative_cost, 9), -p.accuracy))
