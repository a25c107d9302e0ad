"""Per-question label records: what the predictor trains on and the oracle study reads.

One JSON object per line (:meth:`LabelRecord.to_json` / :meth:`LabelRecord.from_json`)::

    {"id": str, "level": int | null, "question": str, "answer": str, "model": str,
     "depth": int, "base_correct": bool,
     "evaluated": [{"program": [int, ...], "correct": bool}, ...],
     "valid_programs": [[int, ...], ...]}

``evaluated`` lists every program the search ran for the question, in search order (the full
program first); ``valid_programs`` are the correct ones, in the same order (written for
readers of the file; read back from ``evaluated``). A record without ``evaluated`` (hand-made
label files) has its ``valid_programs`` as its evaluated, all correct.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polar_vllm.program import Program, full_program
from polar_vllm.search.batched import QuestionResult

__all__ = [
    "LabelRecord",
    "label_programs",
    "label_record",
    "read_label_records",
    "write_label_records",
]

_REQUIRED = ("id", "question", "model", "depth")


@dataclass(frozen=True)
class LabelRecord:
    """One question and every program run for it, with its correctness."""

    id: str
    question: str
    answer: str
    level: int | None
    model: str
    depth: int
    base_correct: bool
    evaluated: tuple[tuple[Program, bool], ...]

    @property
    def valid_programs(self) -> tuple[Program, ...]:
        """The programs that answered right, in search order."""
        return tuple(program for program, correct in self.evaluated if correct)

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this record (one line of a label file)."""
        return {
            "id": self.id,
            "level": self.level,
            "question": self.question,
            "answer": self.answer,
            "model": self.model,
            "depth": self.depth,
            "base_correct": self.base_correct,
            "evaluated": [
                {"program": list(program), "correct": correct}
                for program, correct in self.evaluated
            ],
            "valid_programs": [list(program) for program in self.valid_programs],
        }

    @classmethod
    def from_json(cls, raw: Any, where: str) -> LabelRecord:
        """The record of a JSON object; ``ValueError`` naming ``where`` when malformed."""
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: expected a JSON object")
        missing = [key for key in _REQUIRED if key not in raw]
        if "evaluated" not in raw and "valid_programs" not in raw:
            missing.append("evaluated")
        if missing:
            raise ValueError(f"{where}: missing fields {missing}")
        depth = raw["depth"]
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"{where}: depth must be an int >= 1, got {depth!r}")
        level = raw.get("level")
        return cls(
            id=str(raw["id"]),
            question=str(raw["question"]),
            answer=str(raw.get("answer", "")),
            level=level if isinstance(level, int) and not isinstance(level, bool) else None,
            model=str(raw["model"]),
            depth=depth,
            base_correct=bool(raw.get("base_correct", False)),
            evaluated=_evaluated(raw, where),
        )


def _programs(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(layer, int) for layer in value)


def _evaluated(raw: dict[str, Any], where: str) -> tuple[tuple[Program, bool], ...]:
    if "evaluated" not in raw:
        valid = raw["valid_programs"]
        if not isinstance(valid, list) or not all(_programs(p) for p in valid):
            raise ValueError(f"{where}: valid_programs must be a list of lists of layer indices")
        return tuple((tuple(p), True) for p in valid)
    entries = raw["evaluated"]
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and _programs(e.get("program")) and "correct" in e for e in entries
    ):
        raise ValueError(f"{where}: evaluated must be a list of {{program, correct}} objects")
    return tuple((tuple(e["program"]), bool(e["correct"])) for e in entries)


def label_record(result: QuestionResult, model: str, depth: int) -> LabelRecord:
    """The label record of one searched question."""
    full = full_program(depth)
    base = [correct for program, correct in result.evaluated if program == full]
    if not base:
        raise ValueError(f"question {result.problem.id!r} has no evaluation of the full program")
    problem = result.problem
    return LabelRecord(
        id=problem.id,
        question=problem.question,
        answer=problem.answer,
        level=problem.level,
        model=model,
        depth=depth,
        base_correct=base[0],
        evaluated=tuple(result.evaluated),
    )


def write_label_records(records: Iterable[LabelRecord], path: str | os.PathLike[str]) -> int:
    """Write ``records`` as JSON Lines to ``path`` (replaced atomically); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    count = 0
    with partial.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
            count += 1
    partial.replace(path)
    return count


def read_label_records(paths: Sequence[str | os.PathLike[str]]) -> list[LabelRecord]:
    """The records of the label files ``paths``, in order (blank lines skipped); a file that
    cannot be read or a malformed line raises ``ValueError`` naming the file and line."""
    records = []
    for path in map(Path, paths):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise ValueError(f"label file {path} cannot be read: {e}") from None
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
            records.append(LabelRecord.from_json(raw, f"{path}:{lineno}"))
    return records


def label_programs(path: Path | str, depth: int) -> tuple[Program, ...]:
    """The shortest valid program of each question of a search label file, in file order.

    Only records for a model of ``depth`` layers count; questions without a valid program are
    left out. This is the heterogeneous mix an oracle predictor would send.
    """
    pool = []
    for record in read_label_records([Path(path)]):
        if record.depth == depth and record.valid_programs:
            pool.append(min(record.valid_programs, key=len))
    if not pool:
        raise ValueError(f"{path} has no valid program for a model of depth {depth}")
    return tuple(pool)
