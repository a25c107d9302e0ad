"""Families of programs for benchmarks and baselines: fixed-size skips and repeats, and seeded
random programs in PoLar form. The programs a search found come from
:func:`polar_vllm.search.labels.label_programs`."""

from __future__ import annotations

import random

from polar_vllm.program import MAX_SEGMENT_LEN, PolarForm, Program, SegmentOp, full_program

__all__ = ["homogeneous_program", "random_polar_programs"]


def _spread(candidates: list[int], count: int) -> list[int]:
    """``count`` items of ``candidates`` spread evenly over it."""
    if count <= 0:
        return []
    step = len(candidates) / count
    return sorted({candidates[int(step * (index + 0.5))] for index in range(count)})


def homogeneous_program(depth: int, fraction: float) -> Program:
    """A program that runs ``fraction * depth`` layers, rounded half up (``0 <= fraction <= 2``).

    Below 1 it skips single layers spread evenly over the middle of the stack (the first two
    and last two layers always run); above 1 it runs single layers spread over the middle a
    second time, right after their first pass."""
    if not 0 <= fraction <= 2:
        raise ValueError(f"fraction must be in [0, 2], got {fraction}")
    target = int(fraction * depth + 0.5)
    middle = list(range(2, depth - 2)) if depth > 4 else list(range(depth))
    if target <= depth:
        skipped = set(_spread(middle, depth - target))
        if len(skipped) < depth - target:  # more skips than middle layers
            skipped = set(range(depth - target))
        return tuple(layer for layer in range(depth) if layer not in skipped)
    repeated = set(_spread(middle, target - depth))
    if len(repeated) < target - depth:
        repeated = set(range(target - depth))
    program: list[int] = []
    for layer in range(depth):
        program.extend([layer, layer] if layer in repeated else [layer])
    return tuple(program)


def random_polar_programs(
    depth: int,
    count: int,
    seed: int,
    min_fraction: float = 0.6,
    max_fraction: float = 1.2,
) -> list[Program]:
    """``count`` distinct seeded random programs in PoLar form whose length is between
    ``min_fraction`` and ``max_fraction`` of ``depth`` (segments of 1..4 layers, mostly kept,
    some skipped, some repeated)."""
    rng = random.Random(seed)
    programs: list[Program] = []
    seen: set[Program] = {full_program(depth)}
    for _ in range(10_000 * max(count, 1)):
        if len(programs) == count:
            return programs
        boundaries = [False] * depth
        ops = []
        layer = 0
        while layer < depth:
            boundaries[layer] = True
            ops.append(rng.choices(list(SegmentOp), weights=(2, 6, 2))[0])
            layer += rng.randint(1, MAX_SEGMENT_LEN)
        candidate = PolarForm(tuple(boundaries), tuple(ops)).to_program()
        if min_fraction * depth <= len(candidate) <= max_fraction * depth and candidate not in seen:
            seen.add(candidate)
            programs.append(candidate)
    raise ValueError(f"could not draw {count} distinct programs in the requested length range")
