"""Program-aware admission order: an engine-independent policy.

When more requests wait than the batch can take, vLLM admits them first-come first-served,
so a batch ends up holding many different programs, and a merged schedule of many programs
is long (each decode step reads the weights of every layer of it). The policy here reorders
the waiting requests so that the ones whose programs are already running, then whole groups
of identical programs, are admitted first; a request never waits more than ``max_delay_s``
behind later arrivals.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

__all__ = ["program_aware_order"]

RequestT = TypeVar("RequestT")


def program_aware_order(
    waiting: Sequence[RequestT],
    running_programs: Sequence[Hashable],
    program_of: Callable[[RequestT], Hashable],
    arrival_of: Callable[[RequestT], float],
    now: float,
    max_delay_s: float,
) -> list[RequestT]:
    """``waiting`` reordered by program group; FCFS within a group.

    Group order: first groups that waited longer than ``max_delay_s`` (oldest first), then
    groups whose program is running (most running first), then the rest by their oldest
    request's arrival. The sort is stable, so equal keys keep their queue order.
    """
    running_counts: dict[Hashable, int] = {}
    for program in running_programs:
        running_counts[program] = running_counts.get(program, 0) + 1
    oldest: dict[Hashable, float] = {}
    for request in waiting:
        program = program_of(request)
        oldest[program] = min(oldest.get(program, float("inf")), arrival_of(request))

    def group_key(program: Hashable) -> tuple[int, float, float]:
        if now - oldest[program] > max_delay_s:
            return (0, oldest[program], 0.0)
        if program in running_counts:
            return (1, -running_counts[program], oldest[program])
        return (2, oldest[program], 0.0)

    return sorted(waiting, key=lambda request: group_key(program_of(request)))
