"""The out-of-distribution gate, chosen on wording families the head never saw.

A head trained on some wordings is scored on others by holding each wording family out in
turn (leave one family out): a head of the same settings is trained without the family's
questions, and its choices on them, at every operating point, are looked up in their dense
labels. These are the gate's validation data: what the head does on a wording it has not
learned. The gate is the familiarity guard (:mod:`.familiarity`): below a threshold set by a
quantile of the in-distribution validation questions' familiarity, a question runs a fixed
fallback program instead of the head's choice. Quantile and fallback (the full program, the
best static program of the training questions, or a static program for questions of at least
some number of words and the full program for shorter ones, both chosen on the training and
validation questions with :func:`choose_word_fallback`) are chosen on the held-out families
with :func:`choose_gate`:

1. *safe*: on every held-out family and at every operating point the guard applies to, the
   gated choices are right at least as often as the full program;
2. the fallback is the one whose best safe guard is right most often on the held-out
   families (mean over families and points);
3. of that fallback's safe guards, the smallest quantile: the gate takes as few questions
   from the head as keeps every held-out family safe.

Without a safe guard the one whose worst family-and-point margin over the full program is
largest wins. A family's fold fits its guards, its best static program and its word fallback
on its own training and validation questions, so nothing of the held-out family enters what is
scored on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from polar_vllm.predictor.familiarity import guards_of_embeddings
from polar_vllm.predictor.selection import OperatingPoint, choose, guard_applies

__all__ = ["FALLBACKS", "HeldOutFamily", "choose_gate", "choose_word_fallback", "held_out_family"]

FALLBACKS: tuple[str, ...] = ("full", "best_static", "static_by_words")
"""The fallback strategies a gate may take: the full program, the best static program of the
head's own training questions, or a static program for questions of at least some number of
words and the full program for the shorter ones (:func:`choose_word_fallback`)."""


def choose_word_fallback(
    correct: torch.Tensor, words: torch.Tensor, families: Sequence[str], full_index: int
) -> tuple[int, int] | None:
    """The static program, and the fewest words from which a question runs it instead of the
    full program, chosen on training and validation questions: ``correct`` [Q, C], ``words``
    [Q] (:func:`~polar_vllm.predictor.familiarity.question_words`), ``families`` [Q].

    Every (candidate, count of words seen) is tried. One is *safe* when, on every family, the
    questions it moves off the full program are right at least as often as under it; of the
    safe ones the most questions gained wins (ties: the larger count, moving fewer questions;
    then the earlier candidate). Returns (candidate index, count), or None when nothing
    gains: every question runs the full program.
    """
    names = list(dict.fromkeys(families))
    rows = [torch.tensor([f == name for f in families]) for name in names]
    best: tuple[int, int, int] | None = None  # (gained, count, -candidate): larger is better
    for candidate in range(correct.shape[1]):
        if candidate == full_index:
            continue
        gain = correct[:, candidate] - correct[:, full_index]
        for count in sorted(set(words.tolist())):
            moved = gain * (words >= count)
            if min(float(moved[r].sum()) for r in rows) < 0:
                continue
            key = (round(float(moved.sum())), int(count), -candidate)
            if key[0] > 0 and (best is None or key > best):
                best = key
    return None if best is None else (-best[2], best[1])


@dataclass(frozen=True)
class HeldOutFamily:
    """One wording family as a head that never saw it treats it.

    ``correct`` [Q, C] is the dense labels' correctness; ``choices`` the head's candidate per
    question at each operating point; ``familiarity`` [Q] each question's familiarity to that
    head's training questions; ``thresholds`` that head's guard threshold per quantile;
    ``fallbacks`` the candidate index each fallback strategy gives each question [Q]."""

    name: str
    correct: torch.Tensor
    choices: dict[str, torch.Tensor]
    familiarity: torch.Tensor
    thresholds: dict[float, float]
    fallbacks: dict[str, torch.Tensor]


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
    words: torch.Tensor,
    word_fallback: tuple[int, int] | None,
) -> HeldOutFamily:
    """Score one held-out family: ``probabilities`` [Q, C] of a head trained without it,
    ``embeddings`` [Q, E] and ``words`` [Q] of its questions, and that head's training
    (``reference``) and in-distribution validation (``val_embeddings``) question embeddings
    for its guards, its best static program and its ``word_fallback``
    (:func:`choose_word_fallback`)."""
    guards = guards_of_embeddings(reference, val_embeddings, quantiles)
    full = torch.full_like(words, full_index, dtype=torch.long)
    by_words = full
    if word_fallback is not None:
        program, min_words = word_fallback
        by_words = torch.where(words >= min_words, torch.full_like(full, program), full)
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
        fallbacks={
            "full": full,
            "best_static": torch.full_like(full, static_index),
            "static_by_words": by_words,
        },
    )


def _gated_accuracy(family: HeldOutFamily, quantile: float, fallback: str) -> dict[str, Any]:
    familiar = family.familiarity >= family.thresholds[quantile]
    fallback_index = family.fallbacks[fallback]
    full = float(family.correct.gather(1, family.fallbacks["full"][:, None]).mean())
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
