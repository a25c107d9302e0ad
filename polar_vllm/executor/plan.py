"""Per-forward batch plans: which tokens run each step of the merged schedule.

:func:`plan_batch` takes the programs and query lengths of the requests of one forward step (the
tokens of request ``r`` occupy a contiguous range of the flattened batch, in request order),
merges the distinct programs (:func:`~polar_vllm.executor.schedule.merge_programs`, cached) and
resolves every schedule step to the requests and token rows that run it, per pass of the step's
layer (:class:`SlotRows`). A step every request runs on the same pass is *dense*
(``token_index is None``): it runs on the whole batch with no gather, so a homogeneous batch
costs exactly what a stock forward costs.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from polar_vllm.program import Program

from .schedule import MergedSchedule, clear_merge_cache, merge_programs

__all__ = ["BatchPlan", "SlotRows", "StepPlan", "clear_plan_cache", "plan_batch"]


@dataclass
class SlotRows:
    """The requests of a step that run one pass of its layer, i.e. one KV slot of the layer.

    Attributes:
        pass_index: how many times these requests ran the step's layer before in this forward.
        request_indices: the requests (batch positions), increasing.
        request_index_tensor: ``request_indices`` as an int32 CPU tensor, for subsetting
            per-request attention metadata.
        query_lens: token counts of ``request_indices``, in the same order.
        query_start_loc: int32 CPU tensor ``[0, cumsum(query_lens)...]``: where each request's
            tokens start among these rows (attention metadata's query offsets).
        token_index: int64 rows of the flattened batch (on the plan's device), the token ranges
            of ``request_indices`` concatenated in order; ``None`` when the step is dense.
        start: where these rows begin among the step's rows (slots follow each other by
            increasing pass).
        num_tokens: how many of the step's rows they are.
    """

    pass_index: int
    request_indices: tuple[int, ...]
    request_index_tensor: torch.Tensor
    query_lens: tuple[int, ...]
    query_start_loc: torch.Tensor
    token_index: torch.Tensor | None
    start: int
    num_tokens: int


@dataclass
class StepPlan:
    """One schedule step resolved to the requests and token rows of a batch.

    Attributes:
        layer: decoder layer to run.
        slots: the requests that run each pass of ``layer`` here, by increasing pass; usually
            one. With several, the step runs the layer once on all its rows and splits only
            the attention, by KV slot.
        token_index: int64 rows of the flattened batch that run this step (on the plan's device),
            the slots' rows concatenated in order; ``None`` when the step is dense (every row of
            the batch runs it on one pass, padding rows included).
        num_tokens: rows this step runs (``plan.num_tokens`` when dense).
        groups: program groups (indices into ``BatchPlan.schedule.programs``) that run it.
    """

    layer: int
    slots: tuple[SlotRows, ...]
    token_index: torch.Tensor | None
    num_tokens: int
    groups: tuple[int, ...] = ()

    @property
    def is_dense(self) -> bool:
        """Whether every row of the batch runs this step (no gather/scatter)."""
        return self.token_index is None


@dataclass
class BatchPlan:
    """The steps of one forward over a batch of requests with (possibly) different programs.

    Attributes:
        steps: the schedule, resolved to the batch.
        num_tokens: rows of the flattened batch (``sum(query_lens)`` plus any padding).
        num_requests: requests in the batch.
        query_lens: per-request token counts.
        request_groups: per request, its program group, or -1 for a request with no tokens (it
            is in no step).
        schedule: the merged schedule of the distinct programs.
    """

    steps: list[StepPlan]
    num_tokens: int
    num_requests: int = 0
    query_lens: tuple[int, ...] = ()
    request_groups: tuple[int, ...] = ()
    schedule: MergedSchedule = field(default_factory=lambda: MergedSchedule((), ()))

    @property
    def num_dense_steps(self) -> int:
        """Steps that run on the whole batch."""
        return sum(1 for s in self.steps if s.is_dense)

    @property
    def is_dense(self) -> bool:
        """Whether every step runs on the whole batch (e.g. a homogeneous batch)."""
        return all(s.is_dense for s in self.steps)

    @property
    def layer_token_evals(self) -> int:
        """Layer-token evaluations of the forward (dense steps count padding rows)."""
        return sum(s.num_tokens for s in self.steps)


@dataclass(frozen=True)
class _Layout:
    """Batch-independent facts about a merged schedule (cached with it)."""

    schedule: MergedSchedule
    part_sets: tuple[tuple[int, ...], ...]  # distinct group sets of the slots of non-dense steps
    membership: np.ndarray  # [set, group + 1] bool; the last column (group -1) is False
    step_parts: tuple[tuple[tuple[int, int], ...] | None, ...]
    """Per step: ``None`` when dense, else ``(pass_index, index into part_sets)`` per slot."""


@functools.lru_cache(maxsize=4096)
def _layout(programs: tuple[Program, ...]) -> _Layout:
    schedule = merge_programs(programs)
    num_groups = len(programs)
    set_index: dict[tuple[int, ...], int] = {}
    step_parts: list[tuple[tuple[int, int], ...] | None] = []
    for step in schedule.steps:
        if len(step.slots) == 1 and len(step.slots[0][1]) == num_groups:
            step_parts.append(None)
        else:
            step_parts.append(
                tuple(
                    (pass_index, set_index.setdefault(groups, len(set_index)))
                    for pass_index, groups in step.slots
                )
            )
    membership = np.zeros((len(set_index), num_groups + 1), dtype=bool)
    for groups, k in set_index.items():
        membership[k, list(groups)] = True
    membership.flags.writeable = False
    return _Layout(schedule, tuple(set_index), membership, tuple(step_parts))


class _RowSet(NamedTuple):
    """The requests of a set of program groups and their token rows in a batch: a slot's
    :class:`SlotRows` but for its pass and its place among the step's rows."""

    requests: tuple[int, ...]
    request_tensor: torch.Tensor  # requests as int32 (CPU)
    query_lens: tuple[int, ...]
    query_start_loc: torch.Tensor  # int32 (CPU): [0, cumsum(query_lens)...]
    token_index: torch.Tensor | None  # int64 rows (plan's device); None: every row (dense)
    num_tokens: int

    def slot(self, pass_index: int, start: int = 0) -> SlotRows:
        """These rows as the slot that runs pass ``pass_index``, from row ``start`` of its step."""
        return SlotRows(
            pass_index,
            self.requests,
            self.request_tensor,
            self.query_lens,
            self.query_start_loc,
            self.token_index,
            start,
            self.num_tokens,
        )


class _StepRows(NamedTuple):
    """The slots of a non-dense step, its token rows (the slots' rows in order) and their count."""

    slots: tuple[SlotRows, ...]
    token_index: torch.Tensor
    num_tokens: int


def _resolve_parts(parts: tuple[tuple[int, int], ...], row_sets: Sequence[_RowSet]) -> _StepRows:
    """The rows of a non-dense step whose ``(pass_index, part set)`` pairs are ``parts``;
    ``row_sets[k]`` holds the rows of part set ``k``."""
    slots = []
    start = 0
    for pass_index, k in parts:
        slots.append(row_sets[k].slot(pass_index, start))
        start += row_sets[k].num_tokens
    if len(slots) == 1:
        token_index = slots[0].token_index
    else:
        token_index = torch.cat([slot.token_index for slot in slots])
    return _StepRows(tuple(slots), token_index, start)


def clear_plan_cache() -> None:
    """Empty the planning caches (merged schedules and their layouts), e.g. for benchmarks."""
    _layout.cache_clear()
    clear_merge_cache()


def plan_batch(
    request_programs: Sequence[Program],
    query_lens: Sequence[int],
    device: torch.device | str,
    *,
    num_tokens: int | None = None,
) -> BatchPlan:
    """Plan one forward over requests that run different layer programs.

    Args:
        request_programs: one program per request, in batch order (requests may share one).
        query_lens: tokens of each request in this forward; request ``r``'s tokens are rows
            ``sum(query_lens[:r])`` to ``sum(query_lens[:r + 1])`` of the flattened batch.
            Requests with no tokens are left out of every step (and of the merge).
        device: where token indices live (the device of the hidden states).
        num_tokens: rows of the flattened batch if it is padded past ``sum(query_lens)``;
            padding rows run dense steps only.

    Returns:
        The plan. Distinct programs are merged in order of first appearance (the merge and
        what the plan needs of it are cached by the programs); a step that every request runs
        is dense, so a homogeneous batch gives only dense steps. All token indices reach the
        device in one host-to-device copy.
    """
    if not isinstance(request_programs, (list, tuple)):
        # Identities (used below) are only stable while the objects live: hold them in a list.
        request_programs = list(request_programs)
    batch = _batch_rows(len(request_programs), query_lens, num_tokens)
    grouping = _group_programs(request_programs, batch)
    layout = _layout(grouping.programs)
    dense = _dense_rows(batch)
    row_sets = _part_set_rows(layout, grouping.request_groups, batch, torch.device(device))
    return BatchPlan(
        steps=_step_plans(layout, dense, row_sets, batch.num_tokens),
        num_tokens=batch.num_tokens,
        num_requests=batch.num_requests,
        query_lens=tuple(batch.lens.tolist()),
        request_groups=tuple(grouping.request_groups),
        schedule=layout.schedule,
    )


class _Batch(NamedTuple):
    """The checked token counts of a batch."""

    num_requests: int
    lens: np.ndarray  # int64 [requests]: tokens of each request
    total: int  # sum(lens)
    num_tokens: int  # rows of the flattened batch: total plus any padding
    has_empty: bool  # whether some request has no tokens


def _batch_rows(num_requests: int, query_lens: Sequence[int], num_tokens: int | None) -> _Batch:
    """Check the query lengths (one per program, none negative) and the padded row count."""
    if len(query_lens) != num_requests:
        raise ValueError(f"{num_requests} programs but {len(query_lens)} query lengths")
    lens = np.asarray(query_lens, dtype=np.int64).reshape(num_requests)
    total = int(lens.sum())
    if num_requests and int(lens.min()) < 0:
        raise ValueError(f"query lengths must be non-negative: {list(query_lens)}")
    if num_tokens is None:
        num_tokens = total
    elif num_tokens < total:
        raise ValueError(f"num_tokens={num_tokens} < sum(query_lens)={total}")
    has_empty = bool(num_requests) and int(lens.min()) == 0
    return _Batch(num_requests, lens, total, num_tokens, has_empty)


class _Grouping(NamedTuple):
    """The distinct programs of a batch and each request's group among them."""

    programs: tuple[Program, ...]  # in order of first appearance
    request_groups: list[int]  # per request, its group; -1 for a request with no tokens


def _group_programs(request_programs: Sequence[Program], batch: _Batch) -> _Grouping:
    """Dedupe the programs of the requests with tokens, in order of first appearance.

    Requests usually share program objects: look them up by identity first and hash each
    object's contents once."""
    ids = list(map(id, request_programs))
    if batch.has_empty:
        active_flags = (batch.lens > 0).tolist()
        pairs = zip(ids, request_programs, active_flags, strict=True)
        by_id = {i: program for i, program, a in pairs if a}
    else:
        by_id = dict(zip(ids, request_programs, strict=True))
    distinct: dict[Program, int] = {}
    group_of_id: dict[int, int] = {}
    for i, program in by_id.items():  # first appearances, in order
        key = program if type(program) is tuple else tuple(program)
        group_of_id[i] = distinct.setdefault(key, len(distinct))
    if batch.has_empty:
        flagged = zip(ids, active_flags, strict=True)
        groups = [group_of_id[i] if a else -1 for i, a in flagged]
    else:
        groups = list(map(group_of_id.__getitem__, ids))
    return _Grouping(tuple(distinct), groups)


def _dense_rows(batch: _Batch) -> _RowSet:
    """The rows of a dense step: every request with tokens, and every row of the batch."""
    lens = batch.lens
    if batch.has_empty:
        active = np.flatnonzero(lens > 0)
        requests = tuple(active.tolist())
        query_lens = tuple(lens[active].tolist())
    else:
        active = np.arange(batch.num_requests)
        requests = tuple(range(batch.num_requests))
        query_lens = tuple(lens.tolist())
    offsets = np.zeros(len(query_lens) + 1, dtype=np.int32)
    np.cumsum(query_lens, out=offsets[1:])
    request_tensor = torch.from_numpy(active.astype(np.int32))
    return _RowSet(
        requests, request_tensor, query_lens, torch.from_numpy(offsets), None, batch.num_tokens
    )


def _part_set_rows(
    layout: _Layout, request_groups: list[int], batch: _Batch, device: torch.device
) -> list[_RowSet]:
    """The rows of every part set of ``layout`` (the group sets of non-dense slots), at once.

    The nonzero entries of the (set, request) membership matrix, set by set, are the requests
    of each set; their token ranges follow. All token rows reach ``device`` in one copy."""
    num_sets = len(layout.part_sets)
    if not num_sets:
        return []
    num_requests, lens = batch.num_requests, batch.lens
    groups = np.asarray(request_groups, dtype=np.int64).reshape(num_requests)
    request_mask = layout.membership[:, groups]
    flat = np.flatnonzero(request_mask)
    requests = flat % num_requests if num_requests else flat
    request_counts = np.count_nonzero(request_mask, axis=1).tolist()
    one_token_each = batch.total == num_requests and not batch.has_empty
    request_lens = lens[requests]
    ends = np.cumsum(request_lens)  # running token count over the sets' requests
    first_of_set = np.cumsum([0, *request_counts[:-1]])
    # Query offsets of every set in one array: set k's are [0, its running token counts...]
    # and start at entry first_of_set[k] + k.
    set_of_request = np.repeat(np.arange(num_sets), request_counts)
    tokens_before_set = ends[first_of_set] - request_lens[first_of_set]
    offsets = np.zeros(len(requests) + num_sets, dtype=np.int32)
    offsets[np.arange(1, len(requests) + 1) + set_of_request] = (
        ends - tokens_before_set[set_of_request]
    )
    offset_views = torch.from_numpy(offsets).split_with_sizes([c + 1 for c in request_counts])
    if one_token_each:  # decode: token rows are request indices
        token_rows = requests
        token_counts = request_counts
    else:
        # Concatenated token ranges of `requests`: row = start of its request + offset.
        starts = np.cumsum(lens) - lens
        shift = np.repeat(starts[requests] - (ends - request_lens), request_lens)
        token_rows = np.arange(int(ends[-1]), dtype=np.int64) + shift
        token_counts = np.add.reduceat(request_lens, first_of_set).tolist()
    token_views = _to_device(token_rows, device).split_with_sizes(token_counts)
    request_views = torch.from_numpy(requests.astype(np.int32)).split_with_sizes(request_counts)
    request_list = requests.tolist()
    lens_of_request = None if one_token_each else request_lens.tolist()
    row_sets = []
    start = 0
    for k in range(num_sets):
        end = start + request_counts[k]
        row_sets.append(
            _RowSet(
                tuple(request_list[start:end]),
                request_views[k],
                (1,) * (end - start)
                if lens_of_request is None
                else tuple(lens_of_request[start:end]),
                offset_views[k],
                token_views[k],
                token_counts[k],
            )
        )
        start = end
    return row_sets


def _to_device(rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """``rows`` as an int64 tensor on ``device`` (through pinned memory to a GPU)."""
    host_index = torch.from_numpy(rows.astype(np.int64))
    if device.type == "cpu":
        return host_index
    if device.type == "cuda":
        host_index = host_index.pin_memory()
    return host_index.to(device, non_blocking=True)


def _step_plans(
    layout: _Layout, dense: _RowSet, row_sets: Sequence[_RowSet], num_tokens: int
) -> list[StepPlan]:
    """Every schedule step resolved to its rows; steps with the same parts share them."""
    resolved: dict[tuple[tuple[int, int], ...], _StepRows] = {}
    steps = []
    for step, parts in zip(layout.schedule.steps, layout.step_parts, strict=True):
        if parts is None:  # every request runs this step, on one pass: dense
            slot = dense.slot(step.slots[0][0])
            steps.append(StepPlan(step.layer, (slot,), None, num_tokens, step.groups))
            continue
        if parts not in resolved:
            resolved[parts] = _resolve_parts(parts, row_sets)
        slots, token_index, count = resolved[parts]
        steps.append(StepPlan(step.layer, slots, token_index, count, step.groups))
    return steps
