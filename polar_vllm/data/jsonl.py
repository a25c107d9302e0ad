"""Loading and saving math problems as JSON Lines (GSM8K, DART-Math, ASDiv, MATH styles).

One JSON object per line; blank lines are skipped; ``.gz`` files are read and written
compressed. The question is the first present of ``question``, ``problem``, ``query``; the
answer the first present of ``answer``, ``solution``, ``response`` whose value yields a number
through :func:`~polar_vllm.data.answers.extract_answer` (so a full solution ending in
``#### 72``, ``\\boxed{72}`` or ``The answer is: 72`` gives ``"72"``; JSON numbers are taken
exactly). Optional fields ``id``, ``level`` (an int, or text such as ``"Level 3"``) and
``source`` are read when present.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from polar_vllm.data.answers import canonical_number, extract_answer, normalize_number
from polar_vllm.data.problems import MathProblem

__all__ = ["ANSWER_KEYS", "QUESTION_KEYS", "load_jsonl", "save_jsonl"]

QUESTION_KEYS: tuple[str, ...] = ("question", "problem", "query")
"""Record fields holding the question, in order of preference."""

ANSWER_KEYS: tuple[str, ...] = ("answer", "solution", "response")
"""Record fields holding the answer or a full solution, in order of preference."""

_LEVEL_RE = re.compile(r"-?\d+")


def _open(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="utf-8")  # type: ignore[return-value]
    return open(path, mode, encoding="utf-8")


def _answer_of(value: Any) -> str | None:
    """The canonical numeric answer in a record's answer field, or ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = normalize_number(value)
        return None if number is None else canonical_number(number)
    if isinstance(value, str):
        return extract_answer(value)
    return None


def _level_of(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _LEVEL_RE.search(value)
        return int(match.group()) if match else None
    return None


def load_jsonl(
    path: str | os.PathLike[str],
    level: int | None = None,
    source: str | None = None,
    limit: int | None = None,
    *,
    skip_non_numeric: bool = False,
) -> list[MathProblem]:
    """Problems from the JSON Lines file ``path``.

    ``level`` and ``source``, when given, override the records' own fields (the source defaults
    to the record's ``source``, else the file name without extensions). Ids are the records'
    ``id`` fields, else ``f"{source}-{n:05d}"`` for the n-th record (0-based). ``limit`` stops
    after that many problems. A bad line (invalid JSON, not an object, no question, no answer
    field) raises ``ValueError`` naming the file and the 1-based line number; so does an answer
    with no numeric final answer, unless ``skip_non_numeric`` is set, which skips such records.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    path = Path(path)
    default_source = path.name.split(".")[0] or "jsonl"
    problems: list[MathProblem] = []
    if limit == 0:
        return problems
    with _open(path, "r") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue

            def fail(msg: str, lineno: int = lineno) -> ValueError:
                return ValueError(f"{path}:{lineno}: {msg}")

            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise fail(f"invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise fail(f"expected a JSON object, got {type(record).__name__}")
            qkey = next((k for k in QUESTION_KEYS if k in record), None)
            if qkey is None:
                raise fail(f"missing question field (one of {', '.join(QUESTION_KEYS)})")
            question = record[qkey]
            if not isinstance(question, str) or not question.strip():
                raise fail(f"field {qkey!r} must be a non-empty string")
            akeys = [k for k in ANSWER_KEYS if k in record]
            if not akeys:
                raise fail(f"missing answer field (one of {', '.join(ANSWER_KEYS)})")
            answer = next((a for k in akeys if (a := _answer_of(record[k])) is not None), None)
            if answer is None:
                if skip_non_numeric:
                    continue
                raise fail(f"no numeric final answer in field {akeys[0]!r}")
            src = source
            if src is None:
                rec_source = record.get("source")
                src = rec_source if isinstance(rec_source, str) and rec_source else default_source
            rec_id = record.get("id")
            if isinstance(rec_id, str | int) and not isinstance(rec_id, bool):
                pid = str(rec_id)
            else:
                pid = f"{src}-{len(problems):05d}"
            problems.append(
                MathProblem(
                    id=pid,
                    question=question,
                    answer=answer,
                    level=level if level is not None else _level_of(record.get("level")),
                    source=src,
                )
            )
            if limit is not None and len(problems) >= limit:
                break
    return problems


def save_jsonl(problems: Iterable[MathProblem], path: str | os.PathLike[str]) -> int:
    """Write ``problems`` to ``path`` as JSON Lines; returns the number written.

    Each line has ``id``, ``question``, ``answer``, ``level`` and ``source``, so
    :func:`load_jsonl` reads the same problems back. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with _open(path, "w") as f:
        for p in problems:
            record = {
                "id": p.id,
                "question": p.question,
                "answer": p.answer,
                "level": p.level,
                "source": p.source,
            }
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n
