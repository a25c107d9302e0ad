"""The moves of the program search: skip or repeat a contiguous block of layers.

A *block* is a run of consecutive program positions holding consecutive ascending layers
(``l, l+1, ..., l+b-1``). Skipping it removes those positions; repeating it inserts a copy
right after it (``4, 5`` -> ``4, 5, 4, 5``), which is how the PoLar form runs a segment twice.
Every program reachable this way stays valid: no layer runs more than ``max_passes`` times and
the program length stays inside the window ``[min_length, max_length]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from polar_vllm.program import Program

__all__ = ["ActionSpace", "length_window"]


def length_window(depth: int, min_fraction: float, max_fraction: float) -> tuple[int, int]:
    """Program lengths ``[ceil(min_fraction*D), floor(max_fraction*D)]`` for depth ``D``.

    Raises ``ValueError`` unless ``0 <= min_fraction <= 1 <= max_fraction``, so the full
    program (length ``D``) is always inside the window.
    """
    if not 0 <= min_fraction <= 1 <= max_fraction:
        raise ValueError(
            f"length window fractions need 0 <= min <= 1 <= max, got {min_fraction}, {max_fraction}"
        )
    return math.ceil(min_fraction * depth - 1e-9), math.floor(max_fraction * depth + 1e-9)


@dataclass(frozen=True)
class ActionSpace:
    """Legal moves from a program of a model with ``depth`` layers.

    Blocks are ``1..max_block`` layers long for nodes shallower than ``block_depth`` (the number
    of moves from the full program) and single layers from there on.
    """

    depth: int
    min_length: int
    max_length: int
    max_block: int = 4
    block_depth: int = 2
    max_passes: int = 2

    def __post_init__(self) -> None:
        if self.depth < 1 or self.max_block < 1 or self.block_depth < 0 or self.max_passes < 1:
            raise ValueError(f"invalid action space {self}")
        if not 0 <= self.min_length <= self.depth <= self.max_length:
            raise ValueError(
                f"length window [{self.min_length}, {self.max_length}] must contain the full "
                f"program length {self.depth}"
            )

    def block_sizes(self, tree_depth: int) -> range:
        """Block sizes allowed for a move from a node ``tree_depth`` moves below the root."""
        return range(1, (self.max_block if tree_depth < self.block_depth else 1) + 1)

    def children(self, program: Program, tree_depth: int) -> list[Program]:
        """Distinct programs one legal move away from ``program``, in a fixed order.

        Order: by block start position, then block size, then skip before repeat; a program
        reachable by several moves appears once, at its first move.
        """
        counts: dict[int, int] = {}
        for layer in program:
            counts[layer] = counts.get(layer, 0) + 1
        length = len(program)
        out: dict[Program, None] = {}
        for start in range(length):
            for size in self.block_sizes(tree_depth):
                end = start + size
                if end > length or (size > 1 and program[end - 1] != program[end - 2] + 1):
                    break
                if length - size >= self.min_length:
                    out.setdefault(program[:start] + program[end:], None)
                block = program[start:end]
                if length + size <= self.max_length and all(
                    counts[layer] < self.max_passes for layer in block
                ):
                    out.setdefault(program[:end] + block + program[end:], None)
        return list(out)
