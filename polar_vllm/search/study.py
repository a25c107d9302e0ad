"""The oracle study: how much better a model gets with the best program per input.

Computed from label records (:mod:`polar_vllm.search.labels`), per difficulty level and over
all records (key ``"all"``; records without a level are grouped under ``"none"``). A question
counts as solved by an oracle of a program class when any correct evaluated program of the
question is in the class:

* ``skip_only``: each layer at most once, in ascending order (the full program included);
* ``loop_only``: every layer at least once (so some may run twice; the full program included);
* ``skip_and_loop``: any program.

Also reported: the share of base-right questions with a *shorter* valid program (length < D),
the share of base-wrong questions fixed by a valid program of length <= D, and statistics of the
segments of the canonical PoLar form (:func:`~polar_vllm.program.canonical_polar_form`) of all
valid programs: the share of segments of each length 1..4 and of each op. Shares are ``None``
when their denominator is zero.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from polar_vllm.program import MAX_SEGMENT_LEN, Program, SegmentOp, canonical_polar_form
from polar_vllm.search.labels import LabelRecord

__all__ = [
    "ORACLE_CLASSES",
    "is_loop_only",
    "is_skip_only",
    "oracle_study",
    "plot_study",
    "write_study",
]

ORACLE_CLASSES: tuple[str, ...] = ("skip_only", "loop_only", "skip_and_loop")
"""Program classes of the oracle accuracies."""


def is_skip_only(program: Sequence[int]) -> bool:
    """True when every layer runs at most once, in ascending order."""
    return all(a < b for a, b in itertools.pairwise(program))


def is_loop_only(program: Sequence[int], depth: int) -> bool:
    """True when every one of the ``depth`` layers runs at least once."""
    return set(program) >= set(range(depth))


def _in_class(name: str, program: Sequence[int], depth: int) -> bool:
    if name == "skip_only":
        return is_skip_only(program)
    if name == "loop_only":
        return is_loop_only(program, depth)
    return True


def _share(count: int, total: int) -> float | None:
    return count / total if total else None


def _segment_stats(programs: Iterable[tuple[Sequence[int], int]]) -> dict[str, Any]:
    """Segment length and op shares of the canonical forms of ``(program, depth)`` pairs."""
    lengths = dict.fromkeys(range(1, MAX_SEGMENT_LEN + 1), 0)
    ops = dict.fromkeys(SegmentOp, 0)
    count = unfit = 0
    for program, depth in programs:
        count += 1
        form = canonical_polar_form(program, depth)
        if form is None:
            unfit += 1
            continue
        for (start, end), op in zip(form.segments(), form.ops, strict=True):
            lengths[end - start] += 1
            ops[op] += 1
    segments = sum(lengths.values())
    return {
        "programs": count,
        "not_polar_form": unfit,
        "segments": segments,
        "length_share": {str(k): _share(v, segments) for k, v in lengths.items()},
        "op_share": {op.value: _share(v, segments) for op, v in ops.items()},
    }


def _group_stats(records: Sequence[LabelRecord]) -> dict[str, Any]:
    n = len(records)
    right = [r for r in records if r.base_correct]
    wrong = [r for r in records if not r.base_correct]

    def valid(r: LabelRecord) -> tuple[Program, ...]:
        return r.valid_programs

    oracle = {
        name: _share(sum(any(_in_class(name, p, r.depth) for p in valid(r)) for r in records), n)
        for name in ORACLE_CLASSES
    }
    shortest = [min(len(p) for p in valid(r)) for r in records if valid(r)]
    return {
        "questions": n,
        "base_right": len(right),
        "base_wrong": len(wrong),
        "base_accuracy": _share(len(right), n),
        "oracle_accuracy": oracle,
        "right_with_shorter_program": _share(
            sum(any(len(p) < r.depth for p in valid(r)) for r in right), len(right)
        ),
        "wrong_fixed_within_depth": _share(
            sum(any(len(p) <= r.depth for p in valid(r)) for r in wrong), len(wrong)
        ),
        "mean_evaluated": _share(sum(len(r.evaluated) for r in records), n),
        "mean_shortest_valid_length": _share(sum(shortest), len(shortest)),
        "segments": _segment_stats((p, r.depth) for r in records for p in valid(r)),
    }


def oracle_study(records: Sequence[LabelRecord]) -> dict[str, Any]:
    """Oracle statistics per level (ascending, ``"none"`` last) and over all records."""
    groups: dict[int | None, list[LabelRecord]] = {}
    for record in records:
        groups.setdefault(record.level, []).append(record)
    levels = sorted(groups, key=lambda level: (level is None, level or 0))
    per_level = {
        ("none" if level is None else str(level)): _group_stats(groups[level]) for level in levels
    }
    models = sorted({r.model for r in records})
    return {"models": models, "levels": per_level, "all": _group_stats(records)}


def plot_study(study: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Bar charts per level: oracle accuracies by program class, and segment length shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {**study["levels"], "all": study["all"]}
    names = list(groups)
    fig, (acc_ax, seg_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    series = [("base (full program)", lambda g: g["base_accuracy"])] + [
        (name.replace("_", " "), lambda g, name=name: g["oracle_accuracy"][name])
        for name in ORACLE_CLASSES
    ]
    width = 0.8 / len(series)
    for k, (label, value) in enumerate(series):
        heights = [100 * (value(groups[g]) or 0.0) for g in names]
        acc_ax.bar([i + k * width for i in range(len(names))], heights, width, label=label)
    ticks = [f"{g}\n(n={groups[g]['questions']})" for g in names]
    acc_ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], ticks)
    acc_ax.set_ylim(0, 100)
    acc_ax.set_xlabel("level")
    acc_ax.set_ylabel("accuracy (%)")
    acc_ax.set_title("greedy accuracy: full program vs oracle program")
    acc_ax.legend(fontsize=8)
    lengths = [str(k) for k in range(1, MAX_SEGMENT_LEN + 1)]
    width = 0.8 / len(lengths)
    for k, length in enumerate(lengths):
        heights = [100 * (groups[g]["segments"]["length_share"][length] or 0.0) for g in names]
        seg_ax.bar([i + k * width for i in range(len(names))], heights, width, label=length)
    seg_ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], ticks)
    seg_ax.set_ylim(0, 100)
    seg_ax.set_xlabel("level")
    seg_ax.set_ylabel("share of segments (%)")
    seg_ax.set_title("segment lengths of valid programs (canonical PoLar form)")
    seg_ax.legend(title="layers", fontsize=8)
    fig.suptitle(f"oracle study: {', '.join(study['models'])}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_study(
    records: Sequence[LabelRecord], out_dir: str | os.PathLike[str]
) -> tuple[dict[str, Any], Path, Path]:
    """Compute the study and write ``oracle_study.json`` and ``oracle_study.png`` to ``out_dir``."""
    if not records:
        raise ValueError("the oracle study needs at least one label record")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    study = oracle_study(records)
    json_path = out / "oracle_study.json"
    json_path.write_text(json.dumps(study, indent=1) + "\n", encoding="utf-8")
    png_path = out / "oracle_study.png"
    plot_study(study, png_path)
    return study, json_path, png_path
