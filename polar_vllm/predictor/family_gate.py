"""The out-of-distribution gate, chosen on wording families the head never saw.

A head trained on some wordings is scored on others by holding each wording family out in
turn (leave one family out): a head of the same settings is trained without the family's
questions, and its choices on them, at every operating point, are looked up in their dense
labels. These are the gate's validation data: what the head does on a wording it has not
learned. The gate is the familiarity guard (:mod:`.familiarity`): below a threshold set by a
quantile of the in-distribution validation questions' familiarity, a question runs a fixed
fallback program instead of the head's choice. Quantile and fallback (the full program, or the
best static program of the training questions) are chosen on the held-out families with
:func:`choose_gate`:

1. *safe*: on every held-out family and at every operating point the guard applies to, the
   gated choices are right at least as often as the full program;
2. the fallback is the one whose best safe guard is right most often on the held-out
   families (mean over families and points);
3. of that fallback's safe guards, the smallest quantile: the gate takes as few questions
   from the head as keeps every held-out family safe.

Without a safe guard the one whose worst family-and-point margin over the full program is
largest wins. A family's fold fits its guards and its best static program on its own training
questions, so nothing of the held-out family enters what is scored on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from polar_vllm.predictor.familiarity import guards_of_embeddings
from polar_vllm.predictor.selection import OperatingPoint, choose, guard_applies

__all__ = ["FALLBACKS", "HeldOutFamily", "choose_gate", "held_out_family"]

FALLBACKS: tuple[str, ...] = ("full", "best_static")
"""The fallback strategies a gate may take: the full program, or the best static program of
the head's own training questions."""


@dataclass(frozen=True)
class HeldOutFamily:
    """One wording family as a head that never saw it treats it.

    ``correct`` [Q, C] is the dense labels' correctness; ``choices`` the head's candidate per
    question at each operating point; ``familiarity`` [Q] each question's familiarity to that
    head's training questions; ``thresholds`` that head's guard threshold per quantile;
    ``fallbacks`` the candidate index of each fallback strategy for that head."""

    name: str
    correct: torch.Tensor
    choices: dict[str, torch.Tensor]
    familiarity: torch.Tensor
    thresholds: dict[float, float]
    fallbacks: dict[str, int]


def held_out_family(
    name: str,
    correct: torch.Tensor,
    probabilities: torch.Tensor,
    embeddings: torch.Tensor,
    *,
    reference: torch.Tensor,
    val_embeddings: torch.Tensor,
    quantiles: Sequence[float],
    points: dict[str, OperatingPoint],
    lengths: torch.Tensor,
    depth: int,
    full_index: int,
    static_index: int,
) -> HeldOutFamily:
    """Score one held-out family: ``probabilities`` [Q, C] of a head trained without it,
    ``embeddings`` [Q, E] of its questions, and that head's training (``reference``) and
    in-distribution validation (``val_embeddings``) question embeddings for its guards."""
    guards = guards_of_embeddings(reference, val_embeddings, quantiles)
    return HeldOutFamily(
        name=name,
        correct=correct,
        choices={
            point_name: choose(probabilities, lengths, depth, full_index, point)
            for point_name, point in points.items()
            if guard_applies(point)
        },
        familiarity=guards[0].familiarity(embeddings),
        thresholds={guard.quantile: guard.threshold for guard in guards},
        fallbacks={"full": full_index, "best_static": static_index},
    )


def _gated_accuracy(family: HeldOutFamily, quantile: float, fallback: str) -> dict[str, Any]:
    familiar = family.familiarity >= family.thresholds[quantile]
    fallback_index = torch.full_like(familiar, family.fallbacks[fallback], dtype=torch.long)
    full = float(family.correct[:, family.fallbacks["full"]].mean())
    accuracy = {
        name: float(
            family.correct.gather(1, torch.where(familiar, chosen, fallback_index)[:, None]).mean()
        )
        for name, chosen in family.choices.items()
    }
    return {
        "questions": int(family.correct.shape[0]),
        "gate_fires": float((~familiar).float().mean()),
        "full_program_accuracy": full,
        "accuracy": accuracy,
        "ungated_accuracy": {
            name: float(family.correct.gather(1, chosen[:, None]).mean())
            for name, chosen in family.choices.items()
        },
        "margin": min((a - full for a in accuracy.values()), default=0.0),
    }


def choose_gate(
    families: Sequence[HeldOutFamily], quantiles: Sequence[float]
) -> tuple[float, str, dict[str, Any]]:
    """The gate's quantile and fallback strategy (of :data:`FALLBACKS`), chosen on the
    held-out ``families`` as the module says, and a report of every (quantile, fallback):
    per family how often it fires and what it scores, beside the full program."""
    if not families:
        raise ValueError("choose_gate needs at least one held-out family")
    rows = []
    for fallback in FALLBACKS:
        for quantile in quantiles:
            per_family = {f.name: _gated_accuracy(f, quantile, fallback) for f in families}
            scores = [a for row in per_family.values() for a in row["accuracy"].values()]
            rows.append(
                {
                    "quantile": quantile,
                    "fallback": fallback,
                    "families": per_family,
                    "mean_accuracy": sum(scores) / len(scores) if scores else 0.0,
                    "worst_margin": min(row["margin"] for row in per_family.values()),
                }
            )
    for row in rows:
        row["safe"] = row["worst_margin"] >= -1e-9
    safe = [i for i, row in enumerate(rows) if row["safe"]]
    if safe:
        best = max(safe, key=lambda i: (round(rows[i]["mean_accuracy"], 9), -i))
        fallback = rows[best]["fallback"]
        chosen = min((i for i in safe if rows[i]["fallback"] == fallback),
                     key=lambda i: rows[i]["quantile"])  # fmt: skip
        rule = "fallback by held-out accuracy, then its smallest safe quantile"
    else:
        chosen = max(range(len(rows)), key=lambda i: (round(rows[i]["worst_margin"], 9), -i))
        rule = "no safe gate: the largest worst margin over the full program"
    report = {
        "held_out_families": [f.name for f in families],
        "rule": rule,
        "gates": rows,
        "chosen_quantile": rows[chosen]["quantile"],
        "chosen_fallback": rows[chosen]["fallback"],
    }
    return rows[chosen]["quantile"], rows[chosen]["fallback"], report
