"""Merging per-request layer programs into one shared layer schedule.

A *program* (:data:`polar_vllm.program.Program`) is a tuple of decoder-layer indices, e.g.
``(0, 1, 2, 3, 2, 3, 4)``: layers may be skipped or run more than once. Its *steps*
(:func:`polar_vllm.program.program_steps`) are ``(layer, pass_index)`` pairs, where
``pass_index`` counts the earlier occurrences of the same layer in the program, so every step of
a program is distinct: ``(0, 1, 0, 1, 2)`` has the steps ``(0,0) (1,0) (0,1) (1,1) (2,0)``.

A batch that mixes programs runs one :class:`MergedSchedule`: a sequence of schedule steps, each
naming one layer and, per pass of that layer run there, the program *groups* that run it at that
point. Every program is an in-order subsequence of the schedule: its steps appear exactly at the
schedule steps whose groups contain it, each once. One schedule step may run different passes of
its layer for different groups (say pass 1 for a group that skips ahead and pass 2 for one that
loops back): the layer's weights are read once, and only its attention is split by KV slot.

The number of layer-token evaluations does not depend on the schedule (every token runs each step
of its program once); the schedule *length* does matter, because each schedule step is one pass
over a layer's weights (and one set of kernel launches). :func:`merge_programs` therefore looks
for a short schedule: its length is bounded below by the number of distinct steps over all
programs (:func:`schedule_lower_bound`), which it reaches for the usual skip/repeat families.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from polar_vllm.program import Program, Step, program_steps

__all__ = [
    "PARTIAL_STEP_COST",
    "SPLIT_STEP_COST",
    "MergedSchedule",
    "ScheduleStep",
    "SlotGroups",
    "clear_merge_cache",
    "merge_programs",
    "schedule_cost",
    "schedule_lower_bound",
]


SlotGroups = tuple[int, tuple[int, ...]]
"""``(pass_index, groups)``: the program groups that run pass ``pass_index`` of a step's layer."""


@dataclass(frozen=True)
class ScheduleStep:
    """One step of a merged schedule: run ``layer`` once, each group on its own pass.

    ``slots`` holds one ``(pass_index, groups)`` pair per pass run here, by increasing pass;
    groups are indices into :attr:`MergedSchedule.programs`, in increasing order, and each group
    is in one slot only. Pass ``p`` reads and writes the KV slot of pass ``p`` of ``layer``.
    """

    layer: int
    slots: tuple[SlotGroups, ...]

    @property
    def groups(self) -> tuple[int, ...]:
        """All groups that run this step, in increasing order."""
        if len(self.slots) == 1:
            return self.slots[0][1]
        return tuple(sorted(g for _, groups in self.slots for g in groups))


@dataclass(frozen=True)
class MergedSchedule:
    """The programs of a batch and one schedule that runs all of them.

    Program ``g``'s steps appear, in order, exactly at the steps whose ``groups`` contain ``g``.
    """

    programs: tuple[Program, ...]
    steps: tuple[ScheduleStep, ...]

    def __len__(self) -> int:
        return len(self.steps)


def schedule_lower_bound(programs: Sequence[Program]) -> int:
    """Return the number of distinct ``(layer, pass_index)`` steps over ``programs``.

    No schedule running all of the programs can be shorter: layer ``l`` must appear at least as
    often as the program that runs it most often runs it, and that is the number of distinct
    ``(l, pass)`` steps.
    """
    union: set[Step] = set()
    for program in programs:
        union.update(program_steps(program))
    return len(union)


def schedule_cost(schedule: MergedSchedule, group_token_counts: Sequence[int]) -> int:
    """Return the number of layer-token evaluations of ``schedule``.

    ``group_token_counts[g]`` is the number of tokens that run program group ``g``.
    """
    return sum(sum(group_token_counts[g] for g in step.groups) for step in schedule.steps)


PARTIAL_STEP_COST = 0.4
"""What a step that not every row runs (on one pass) costs on top of a dense step: gathering and
scattering its rows and restricting attention metadata to its requests. In units of one layer
call on few rows (in vLLM's CPU engine about 0.4 ms against 0.8-1.1 ms for SmolLM2-135M)."""

SPLIT_STEP_COST = 0.4
"""What each extra pass in a step costs, in the same units: one more attention call, usually
with attention metadata for a request set of its own (measured like :data:`PARTIAL_STEP_COST`)."""

ALIGN_CELL_BUDGET = 100_000
"""Largest alignment table (program steps x schedule length) that :func:`merge_programs` fills
per alignment candidate; bigger merges (dozens of distinct programs) use the greedy candidates
only, so a cold merge stays in the order of 10 ms."""

_Token = Step | int
"""What the merge heuristics align: a program's ``(layer, pass)`` steps, or only its layers (then
one schedule step may run different passes of a layer for different programs)."""

# A schedule under construction: (token, groups) pairs.
_RawSchedule = list[tuple[_Token, tuple[int, ...]]]


def _greedy(steps: Sequence[tuple[_Token, ...]], lookahead: bool) -> _RawSchedule:
    """Greedy merge: advance every program whose head token is the chosen one.

    Candidates are the head steps of unfinished programs. A candidate's *waiters* are programs
    that need the same step later but are not at it yet: choosing it now makes them run it again
    in a schedule step of their own. Ranking (smallest key wins):

    * ``lookahead=False`` (majority merge): most programs at the head first, then the largest
      total remaining length of those programs (critical path first), then lowest layer, pass.
    * ``lookahead=True``: candidates without waiters first; then most programs at the head minus
      waiters; then as above.

    Heads and "still needed by" counts are kept up to date incrementally, so a schedule step
    costs O(number of distinct heads) plus the programs it advances.
    """
    ptr = [0] * len(steps)
    heads: dict[_Token, list[int]] = {}
    need: dict[_Token, int] = {}  # remaining occurrences of the token over unfinished programs
    for g, prog in enumerate(steps):
        if prog:
            heads.setdefault(prog[0], []).append(g)
        for step in prog:
            need[step] = need.get(step, 0) + 1
    out: _RawSchedule = []
    while heads:
        best_key = None
        best_step: _Token | None = None
        for step, groups in heads.items():
            count = len(groups)
            remaining = sum(len(steps[g]) - ptr[g] for g in groups)
            if lookahead:
                waiters = need[step] - count
                key = (waiters > 0, waiters - count, -count, -remaining, step)
            else:
                key = (-count, -remaining, step)
            if best_key is None or key < best_key:
                best_key, best_step = key, step
        assert best_step is not None
        chosen = heads.pop(best_step)
        need[best_step] -= len(chosen)
        for g in chosen:
            ptr[g] += 1
            if ptr[g] < len(steps[g]):
                heads.setdefault(steps[g][ptr[g]], []).append(g)
        out.append((best_step, tuple(chosen)))
    return out


def _align(schedule: _RawSchedule, steps: tuple[_Token, ...], group: int) -> _RawSchedule:
    """Merge one program into a schedule along a shortest common supersequence (exact DP).

    Schedule steps equal to a program step may be shared (``group`` joins them); the others are
    kept, and unmatched program steps are inserted as steps of their own.
    """
    m, n = len(schedule), len(steps)
    keys = [s for s, _ in schedule]
    # dp[i][j]: shortest supersequence of schedule[i:] and steps[j:].
    dp = [[0] * (n + 1) for _ in range(m + 1)]
    for j in range(n + 1):
        dp[m][j] = n - j
    for i in range(m - 1, -1, -1):
        row, below = dp[i], dp[i + 1]
        row[n] = m - i
        key = keys[i]
        for j in range(n - 1, -1, -1):
            if key == steps[j]:
                row[j] = below[j + 1] + 1
            else:
                a, b = below[j], row[j + 1]
                row[j] = (a if a < b else b) + 1
    out: _RawSchedule = []
    i = j = 0
    while i < m or j < n:
        if i < m and j < n and keys[i] == steps[j]:
            out.append((keys[i], (*schedule[i][1], group)))
            i += 1
            j += 1
        elif j == n or (i < m and dp[i + 1][j] <= dp[i][j + 1]):
            out.append(schedule[i])
            i += 1
        else:
            out.append((steps[j], (group,)))
            j += 1
    return out


def _progressive(steps: Sequence[tuple[_Token, ...]], order: Sequence[int]) -> _RawSchedule:
    """Merge programs one at a time, in ``order``, with :func:`_align`."""
    out: _RawSchedule = []
    for g in order:
        out = _align(out, steps[g], g)
    return out


def _finish(
    programs: tuple[Program, ...], steps: Sequence[tuple[Step, ...]], raw: _RawSchedule
) -> MergedSchedule:
    """The schedule of ``raw``, each group's pass at each of its steps read off its program."""
    ptr = [0] * len(steps)
    out = []
    for _, groups in raw:
        by_pass: dict[int, list[int]] = {}
        for g in groups:
            layer, pass_index = steps[g][ptr[g]]
            ptr[g] += 1
            by_pass.setdefault(pass_index, []).append(g)
        slots = tuple((p, tuple(sorted(by_pass[p]))) for p in sorted(by_pass))
        out.append(ScheduleStep(layer, slots))
    return MergedSchedule(programs=programs, steps=tuple(out))


@functools.lru_cache(maxsize=4096)
def merge_programs(programs: tuple[Program, ...]) -> MergedSchedule:
    """Merge distinct programs into one short schedule (cached by ``programs``).

    The caller passes each distinct program once, in order of first appearance; group ``g`` of
    the result is ``programs[g]``. (Repeated programs are accepted and always run in the same
    steps.) Empty programs appear in no step.

    The schedule depends only on the *set* of programs: it is computed (and cached a second time)
    for the programs in sorted order, so that a batch whose requests were reordered, or whose
    programs first appear in another order, reuses it. Candidates, all deterministic, each built
    twice: aligning the programs' ``(layer, pass)`` steps, and aligning their layers only (which
    lets one step run pass 1 of a layer for some groups and pass 2 for others, and is often
    shorter when programs loop back over different segments):

    1. greedy with lookahead (see :func:`_greedy`): among the head steps of the unfinished
       programs, prefer one that no other program needs later, so that a layer is not run twice
       for different groups; then the one at the head of the most programs;
    2. greedy majority merge: the head step of the most programs, ties to the longest remaining
       work, then the lowest ``(layer, pass)``;
    3. progressive exact pairwise alignment (shortest common supersequence of the schedule so far
       and the next program), programs taken longest first, then in sorted order.

    Candidates are tried in that order, stopping as soon as one reaches
    :func:`schedule_lower_bound` with one pass per step (then it is optimal); the alignments are
    skipped when their table would exceed :data:`ALIGN_CELL_BUDGET` cells. The result is the
    candidate of lowest estimated cost: one per step (each reads a layer's weights), plus
    :data:`PARTIAL_STEP_COST` per step that not every non-empty program runs on one pass (a
    gather/scatter), plus :data:`SPLIT_STEP_COST` per extra pass in a step (an attention call);
    ties go to the shorter, then by the order above. A shorter schedule with many split steps
    can thus lose to a slightly longer one without them.
    """
    programs = tuple(tuple(int(layer) for layer in p) for p in programs)
    order = sorted(range(len(programs)), key=lambda g: programs[g])
    canonical = _merge_sorted(tuple(programs[g] for g in order))
    # canonical group c is programs[order[c]]; repeated programs join the same steps.
    members: dict[Program, list[int]] = {}
    for g, program in enumerate(programs):
        members.setdefault(program, []).append(g)
    steps = []
    for step in canonical.steps:
        slots = tuple(
            (pass_index, tuple(sorted(g for c in groups for g in members[canonical.programs[c]])))
            for pass_index, groups in step.slots
        )
        steps.append(ScheduleStep(step.layer, slots))
    return MergedSchedule(programs=programs, steps=tuple(steps))


@functools.lru_cache(maxsize=4096)
def _merge_sorted(programs: tuple[Program, ...]) -> MergedSchedule:
    """:func:`merge_programs` for sorted programs, duplicates dropped."""
    programs = tuple(dict.fromkeys(programs))
    steps = [program_steps(p) for p in programs]
    layers = list(programs)
    lower = schedule_lower_bound(programs)
    nonempty = sum(1 for s in steps if s)

    def rank(schedule: MergedSchedule) -> tuple[float, int]:
        partial = sum(
            1 for s in schedule.steps if len(s.slots) > 1 or len(s.slots[0][1]) != nonempty
        )
        extra_passes = sum(len(s.slots) - 1 for s in schedule.steps)
        cost = len(schedule) + PARTIAL_STEP_COST * partial + SPLIT_STEP_COST * extra_passes
        return cost, len(schedule)

    by_length = sorted(range(len(steps)), key=lambda g: -len(steps[g]))
    candidates = (
        (False, lambda: _greedy(steps, lookahead=True)),
        (False, lambda: _greedy(steps, lookahead=False)),
        (False, lambda: _greedy(layers, lookahead=True)),
        (False, lambda: _greedy(layers, lookahead=False)),
        (True, lambda: _progressive(steps, by_length)),
        (True, lambda: _progressive(layers, by_length)),
        (True, lambda: _progressive(steps, range(len(steps)))),
        (True, lambda: _progressive(layers, range(len(steps)))),
    )
    total_steps = sum(len(s) for s in steps)
    best: MergedSchedule | None = None
    best_rank: tuple[float, int] | None = None
    for is_alignment, make in candidates:
        if is_alignment and best is not None and total_steps * len(best) > ALIGN_CELL_BUDGET:
            continue  # keep a cold merge of many programs cheap: greedy only
        schedule = _finish(programs, steps, make())
        schedule_rank = rank(schedule)
        if best_rank is None or schedule_rank < best_rank:
            best, best_rank = schedule, schedule_rank
        if len(best) == lower and all(len(s.slots) == 1 for s in best.steps):
            # Optimal: each (layer, pass) runs once, for every program needing it, in one step.
            break
    assert best is not None
    return best


def clear_merge_cache() -> None:
    """Empty the caches of :func:`merge_programs` (for benchmarks of uncached planning)."""
    merge_programs.cache_clear()
    _merge_sorted.cache_clear()
