"""Program-aware admission order: an engine-independent policy.

When more requests wait than the batch can take, vLLM admits them first-come first-served,
so a batch ends up holding many different programs. Their merged schedule is long: it has at
least one step per distinct ``(layer, pass)`` over the batch's programs, and at decode batch
sizes a step costs about what a whole layer costs, however few rows run it. The policy here
reorders the waiting requests so that the free batch slots go to the programs that add the
fewest new ``(layer, pass)`` steps to what is already running (identical programs add none),
per admitted request; a request never waits more than ``max_delay_s`` behind later arrivals.

An idle engine that admitted the first request of a burst the moment it arrived would anchor
the batch to that request's program before the rest of the burst (an offline ``generate``
call, a client's batch of requests) had arrived; :func:`gathering_burst` says when to hold
admission a moment so that the first batch is chosen from the whole burst.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TypeVar

from polar_vllm.program import Program, Step, program_steps

__all__ = ["BURST_QUIET_S", "gathering_burst", "new_steps", "program_aware_order"]

RequestT = TypeVar("RequestT")

BURST_QUIET_S = 0.01
"""A burst has ended once no request has arrived for this long (seconds). The requests of one
burst reach the engine well under this far apart (at most about 3.5 ms apart in an offline
``generate`` of 128 requests on two CPU cores)."""


@functools.lru_cache(maxsize=8192)
def _step_set(program: Program) -> frozenset[Step]:
    return frozenset(program_steps(program))


def new_steps(program: Program, running_steps: set[Step] | frozenset[Step]) -> int:
    """How many ``(layer, pass)`` steps ``program`` adds to a batch running ``running_steps``."""
    return len(_step_set(program) - running_steps)


def program_aware_order(
    waiting: Sequence[RequestT],
    running_programs: Sequence[Program],
    program_of: Callable[[RequestT], Program],
    arrival_of: Callable[[RequestT], float],
    now: float,
    max_delay_s: float,
    free_slots: int,
) -> list[RequestT]:
    """``waiting`` reordered so the first ``free_slots`` requests share layers with the batch.

    Order:

    1. requests that waited longer than ``max_delay_s``, oldest first;
    2. then, while free slots remain, whole program groups, greedily: the group whose program
       adds the fewest new ``(layer, pass)`` steps to the running programs and the groups
       chosen before it, per request it can admit (``new steps / min(group size, slots
       left)``, so identical programs come first and, on an empty batch, the largest group),
       ties to the group with the oldest request;
    3. then the other groups, by their oldest request.

    Within a group, requests keep their queue order.
    """
    overdue = sorted((r for r in waiting if now - arrival_of(r) > max_delay_s), key=arrival_of)
    overdue_ids = set(map(id, overdue))
    groups: dict[Program, list[RequestT]] = {}
    for request in waiting:
        if id(request) not in overdue_ids:
            groups.setdefault(tuple(program_of(request)), []).append(request)
    oldest = {program: min(map(arrival_of, members)) for program, members in groups.items()}
    running_steps: set[Step] = set()
    for program in {*map(tuple, running_programs), *(tuple(program_of(r)) for r in overdue)}:
        running_steps |= _step_set(program)
    slots_left = free_slots - len(overdue)
    chosen: list[RequestT] = []
    while slots_left > 0 and groups:
        program = min(
            groups,
            key=lambda p, steps=running_steps, slots=slots_left: (
                new_steps(p, steps) / min(len(groups[p]), slots),
                oldest[p],
            ),
        )
        members = groups.pop(program)
        chosen.extend(members)
        running_steps |= _step_set(program)
        slots_left -= len(members)
    rest = sorted(groups, key=oldest.__getitem__)
    return [*overdue, *chosen, *(request for program in rest for request in groups[program])]


def gathering_burst(arrival_times: Sequence[float], now: float, window_s: float) -> bool:
    """Whether an idle engine should hold admission so that more of a burst arrives first.

    True while requests are still arriving (the newest of ``arrival_times`` is less than
    :data:`BURST_QUIET_S` old) and the oldest has waited less than ``window_s`` (``0`` never
    holds). A lone request is held for :data:`BURST_QUIET_S` at most.
    """
    if window_s <= 0 or not arrival_times:
        return False
    return now - max(arrival_times) < BURST_QUIET_S and now - min(arrival_times) < window_s
