"""The oracle upper bound, for reporting only: on the test questions that a search covered,
the share some searched program answers right, beside the evaluated methods on the same
questions. Nothing here feeds training or the choice of an operating point."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from polar_vllm.predictor.evaluation import MethodResult
from polar_vllm.search.labels import LabelRecord

__all__ = ["oracle_summary"]


def oracle_summary(
    records: Sequence[LabelRecord], items: Sequence[dict[str, Any]], depth: int
) -> dict[str, Any]:
    """The oracle row of an evaluation: the searched questions among ``items`` (per-item
    records of :func:`~polar_vllm.predictor.evaluation.evaluate`, matched by id).

    ``pass@1`` is the share with a right program; ``avg_layers`` the mean length of the
    shortest right program (``depth`` where none is right). ``methods`` gives every evaluated
    method's pass@1 and mean layers on the same questions.

    Raises:
        ValueError: no searched question is among ``items``.
    """
    by_id = {record.id: record for record in records}
    covered = [item for item in items if item["id"] in by_id]
    if not covered:
        raise ValueError("no question of the oracle labels is among the evaluated questions")
    shortest = []
    for item in covered:
        valid = by_id[item["id"]].valid_programs
        shortest.append(min((len(program) for program in valid), default=None))
    names = [key for key, value in covered[0].items() if isinstance(value, dict)]
    return {
        "questions": len(covered),
        "pass@1": statistics.fmean(length is not None for length in shortest),
        "avg_layers": statistics.fmean(depth if n is None else n for n in shortest),
        "methods": {
            name: {
                "pass@1": statistics.fmean(MethodResult(**item[name]).pass1 for item in covered),
                "avg_layers": statistics.fmean(item[name]["layers"][0] for item in covered),
            }
            for name in names
        },
    }
