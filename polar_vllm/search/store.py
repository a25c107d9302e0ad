"""The resumable record of evaluated (question, program) pairs: a JSON Lines file.

The first line is ``{"meta": {...}}``, the settings the results depend on (model, dtype,
prompt, ``max_tokens``, ...). Every further line is one evaluation::

    {"id": str, "program": [int, ...], "correct": bool, "answer": str | null, "text": str}

Results are appended and flushed to disk as soon as they are computed. Reopening the file with
the same meta loads them all; a last line cut off by an interruption is dropped (and cut from
the file) and a different meta is refused, so stale results are never mixed in.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polar_vllm.program import Program

__all__ = ["Evaluation", "EvaluationStore"]


@dataclass(frozen=True)
class Evaluation:
    """One evaluated program for one question."""

    question_id: str
    program: Program
    correct: bool
    answer: str | None
    text: str

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this evaluation (one line of the store)."""
        return {
            "id": self.question_id,
            "program": list(self.program),
            "correct": self.correct,
            "answer": self.answer,
            "text": self.text,
        }


class EvaluationStore:
    """Evaluations keyed by (question id, program), backed by an append-only JSONL file."""

    def __init__(self, path: str | os.PathLike[str], meta: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.meta = json.loads(json.dumps(dict(meta)))  # normalised as it reads back
        self._results: dict[tuple[str, Program], Evaluation] = {}
        self.loaded = 0
        if self.path.exists() and self.path.stat().st_size > 0:
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("w", encoding="utf-8") as f:
                f.write(json.dumps({"meta": self.meta}) + "\n")

    def _load(self) -> None:
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) < len(data):  # a line cut off by an interruption
            with self.path.open("r+b") as f:
                f.truncate(len(complete))
        lines = complete.decode("utf-8").splitlines()
        try:
            head = json.loads(lines[0]) if lines else None
        except json.JSONDecodeError:
            head = None
        if not isinstance(head, dict) or "meta" not in head:
            raise ValueError(f"{self.path}: first line is not a search meta record")
        if head["meta"] != self.meta:
            raise ValueError(
                f"{self.path} was written with other settings: {head['meta']} != {self.meta}; "
                "use another output directory or the original settings"
            )
        for lineno, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                evaluation = Evaluation(
                    str(raw["id"]),
                    tuple(int(x) for x in raw["program"]),
                    bool(raw["correct"]),
                    raw.get("answer"),
                    str(raw.get("text", "")),
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{self.path}:{lineno}: bad evaluation record ({e})") from None
            self._results[(evaluation.question_id, evaluation.program)] = evaluation
        self.loaded = len(self._results)

    def __len__(self) -> int:
        return len(self._results)

    def __iter__(self) -> Iterator[Evaluation]:
        """Every stored evaluation, in the order it was first recorded."""
        return iter(self._results.values())

    def get(self, question_id: str, program: Program) -> Evaluation | None:
        """The stored evaluation of ``program`` for ``question_id``, if any."""
        return self._results.get((question_id, program))

    def add(self, evaluations: Iterable[Evaluation]) -> None:
        """Record ``evaluations`` and append them to the file (flushed and synced)."""
        new = list(evaluations)
        with self.path.open("a", encoding="utf-8") as f:
            for evaluation in new:
                f.write(json.dumps(evaluation.to_json(), ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for evaluation in new:
            self._results[(evaluation.question_id, evaluation.program)] = evaluation
