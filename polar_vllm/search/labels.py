"""Per-question label records: what the predictor trains on and the oracle study reads.

One JSON object per line::

    {"id": str, "level": int | null, "question": str, "answer": str, "model": str,
     "depth": int, "base_correct": bool,
     "evaluated": [{"program": [int, ...], "correct": bool}, ...],
     "valid_programs": [[int, ...], ...]}

``evaluated`` lists every program the search ran for the question, in search order (the full
program first); ``valid_programs`` are the correct ones, in the same order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from polar_vllm.program import full_program
from polar_vllm.search.runner import QuestionResult

__all__ = ["label_record", "read_label_records", "write_label_records"]


def label_record(result: QuestionResult, model: str, depth: int) -> dict[str, Any]:
    """The label record of one searched question."""
    full = full_program(depth)
    base = [correct for program, correct in result.evaluated if program == full]
    if not base:
        raise ValueError(f"question {result.problem.id!r} has no evaluation of the full program")
    problem = result.problem
    return {
        "id": problem.id,
        "level": problem.level,
        "question": problem.question,
        "answer": problem.answer,
        "model": model,
        "depth": depth,
        "base_correct": base[0],
        "evaluated": [
            {"program": list(program), "correct": correct} for program, correct in result.evaluated
        ],
        "valid_programs": [list(program) for program, correct in result.evaluated if correct],
    }


def write_label_records(records: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> int:
    """Write ``records`` as JSON Lines to ``path`` (replaced atomically); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    count = 0
    with partial.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    partial.replace(path)
    return count


def read_label_records(paths: Sequence[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """The records of the label files ``paths``, in order (blank lines skipped)."""
    records = []
    for path in map(Path, paths):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
    return records
