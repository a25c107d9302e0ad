"""KV memory by program: which KV-cache group each (layer, pass) slot belongs to.

Every (layer, pass) pair a program may run owns a KV slot. The slots are partitioned into
groups of ``kv_group_layers`` (k) consecutive layers of one pass: pass ``p``'s windows
``[j*k, (j+1)*k)``, pass 1 first. vLLM keeps one block table per group, all drawing blocks
from one pool, and a request gets blocks only in the groups its program enters
(:meth:`KVGroupLayout.groups_of`). Plain Python, no vLLM import.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

from polar_vllm.engine.config import PolarConfig
from polar_vllm.program import Program

__all__ = ["KVGroup", "KVGroupLayout", "program_slots"]


@dataclass(frozen=True)
class KVGroup:
    """One KV-cache group: ``layers`` (consecutive, increasing) on pass ``pass_index`` (0-based)."""

    pass_index: int
    layers: tuple[int, ...]


def program_slots(program: Program) -> list[tuple[int, int]]:
    """The ``(layer, pass index)`` slots ``program`` runs, in program order."""
    seen: dict[int, int] = {}
    slots = []
    for layer in program:
        slots.append((layer, seen.get(layer, 0)))
        seen[layer] = seen.get(layer, 0) + 1
    return slots


class KVGroupLayout:
    """The KV-cache groups of a PoLar model, and the groups each program enters."""

    def __init__(self, groups: Iterable[KVGroup]) -> None:
        self.groups = tuple(groups)
        self._group_of_slot = {
            (layer, group.pass_index): index
            for index, group in enumerate(self.groups)
            for layer in group.layers
        }
        self.groups_of = functools.lru_cache(maxsize=4096)(self._groups_of)

    @classmethod
    def from_config(cls, config: PolarConfig) -> KVGroupLayout:
        """The groups of a model with ``config``'s depth, loop layers and group size."""
        size = config.kv_group_layers
        groups = []
        for pass_index in range(config.max_passes):
            for start in range(0, config.depth, size):
                window = range(start, start + size)
                # config checked that loop_layers fills whole windows, so a window's
                # layers all have this pass's slot or none does.
                if config.slot_passes(start) > pass_index:
                    groups.append(KVGroup(pass_index, tuple(window)))
        return cls(groups)

    def group_of(self, layer: int, pass_index: int) -> int:
        """The index of the group holding slot ``(layer, pass_index)``."""
        return self._group_of_slot[layer, pass_index]

    def _groups_of(self, program: Program) -> frozenset[int]:
        """The groups ``program`` enters (reads or writes a slot of)."""
        return frozenset(
            self.group_of(layer, pass_index) for layer, pass_index in program_slots(program)
        )

    def slots_per_token(self, program: Program) -> int:
        """KV slots a token of ``program`` holds memory in: its groups' layers."""
        return sum(len(self.groups[index].layers) for index in self.groups_of(program))
