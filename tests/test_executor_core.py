"""Tests of the executor core: schedule merging, batch plans and plan execution (CPU, torch)."""

from __future__ import annotations

import itertools
import random
from collections import deque

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from polar_vllm.executor import (
    BatchPlan,
    MergedSchedule,
    StepPlan,
    merge_programs,
    plan_batch,
    program_steps,
    run_plan,
    schedule_cost,
    schedule_lower_bound,
)
from polar_vllm.executor.schedule import ALIGN_CELL_BUDGET

SETTINGS = settings(derandomize=True, deadline=None, max_examples=150)


# --------------------------------------------------------------------------- program generators


@st.composite
def family_programs(draw, depth: int | None = None, skips: bool = True, repeats: bool = True):
    """A program of the usual family: layers 0..D-1 with skips and immediate segment repeats."""
    if depth is None:
        depth = draw(st.integers(1, 12))
    layers = list(range(depth))
    if skips:
        keep = draw(st.lists(st.booleans(), min_size=depth, max_size=depth))
        layers = [layer for layer, k in zip(layers, keep, strict=True) if k or draw(st.booleans())]
    if repeats:
        for _ in range(draw(st.integers(0, 3))):
            if not layers:
                break
            size = draw(st.integers(1, min(4, len(layers))))
            start = draw(st.integers(0, len(layers) - size))
            layers[start + size : start + size] = layers[start : start + size]
    return tuple(layers)


def arbitrary_programs(depth: int = 6, max_len: int = 12):
    return st.lists(st.integers(0, depth - 1), max_size=max_len).map(tuple)


def check_schedule(schedule: MergedSchedule) -> None:
    """Every program is an in-order subsequence of the schedule, exactly at its listed steps."""
    programs = schedule.programs
    per_group: list[list[tuple[int, int]]] = [[] for _ in programs]
    for step in schedule.steps:
        assert step.groups, "a step must run for some group"
        assert list(step.groups) == sorted(set(step.groups))
        passes = [pass_index for pass_index, _ in step.slots]
        assert passes == sorted(set(passes)), "one slot per pass, by increasing pass"
        assert sum(len(groups) for _, groups in step.slots) == len(step.groups)
        for pass_index, groups in step.slots:
            assert list(groups) == sorted(set(groups))
            for g in groups:
                per_group[g].append((step.layer, pass_index))
    for g, program in enumerate(programs):
        steps = program_steps(program)
        assert tuple(per_group[g]) == steps
        assert len(set(steps)) == len(steps)  # no (layer, pass) twice
    lengths = [len(p) for p in programs]
    assert len(schedule.steps) <= sum(lengths)
    assert len(schedule.steps) >= max(lengths, default=0)
    assert len(schedule.steps) >= schedule_lower_bound(programs)


def exact_merge_length(programs, by_layer: bool = True) -> int:
    """Shortest schedule length by breadth-first search over program pointers (small inputs).

    A schedule step runs one layer for any programs whose next layer it is, whatever their pass
    (``by_layer``), or one ``(layer, pass)`` only."""
    steps = [tuple(p) if by_layer else program_steps(p) for p in programs]
    start, end = (0,) * len(steps), tuple(len(s) for s in steps)
    dist = {start: 0}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        if state == end:
            return dist[state]
        heads: dict[object, list[int]] = {}
        for g, s in enumerate(steps):
            if state[g] < len(s):
                heads.setdefault(s[state[g]], []).append(g)
        for groups in heads.values():
            nxt = list(state)
            for g in groups:
                nxt[g] += 1
            nxt_state = tuple(nxt)
            if nxt_state not in dist:
                dist[nxt_state] = dist[state] + 1
                queue.append(nxt_state)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- schedule


def test_program_steps():
    assert program_steps((0, 1, 0, 1, 2)) == ((0, 0), (1, 0), (0, 1), (1, 1), (2, 0))
    assert program_steps(()) == ()
    with pytest.raises(ValueError):
        program_steps((0, -1))


@SETTINGS
@given(st.lists(family_programs(), min_size=1, max_size=8, unique=True))
def test_merge_family_programs(programs):
    check_schedule(merge_programs(tuple(programs)))


@SETTINGS
@given(st.lists(arbitrary_programs(), min_size=1, max_size=5, unique=True))
def test_merge_arbitrary_programs(programs):
    check_schedule(merge_programs(tuple(programs)))


@SETTINGS
@given(
    st.integers(1, 16).flatmap(
        lambda d: st.lists(family_programs(d, repeats=False), min_size=1, max_size=10)
    )
)
def test_skip_only_families_reach_the_union(programs):
    programs = tuple(dict.fromkeys(programs))
    schedule = merge_programs(programs)
    check_schedule(schedule)
    assert len(schedule.steps) == schedule_lower_bound(programs)


@settings(derandomize=True, deadline=None, max_examples=60)
@given(st.lists(arbitrary_programs(5, 8), min_size=2, max_size=2, unique=True))
def test_two_programs_merge_is_optimal(programs):
    # The exact pairwise alignment candidates make two-program merges as short as any schedule
    # with one pass per step, and shorter only through steps that run several passes.
    schedule = merge_programs(tuple(programs))
    assert exact_merge_length(programs) <= len(schedule.steps)
    assert len(schedule.steps) <= exact_merge_length(programs, by_layer=False)
    if len(schedule.steps) < exact_merge_length(programs, by_layer=False):
        assert any(len(step.slots) > 1 for step in schedule.steps)


def test_merge_prefers_fewer_split_steps_to_one_step_less():
    # A 9-step schedule exists only with steps split over several passes; the 10-step one with
    # one pass per step and more dense steps costs less (PARTIAL_STEP_COST, SPLIT_STEP_COST).
    programs = ((0, 1, 0, 1, 2, 1, 2, 3, 4), (0, 0, 1, 1, 2, 3, 4))
    schedule = merge_programs(programs)
    check_schedule(schedule)
    assert exact_merge_length(programs) == 9
    assert len(schedule.steps) == 10 == exact_merge_length(programs, by_layer=False)
    assert all(len(step.slots) == 1 for step in schedule.steps)


@pytest.mark.parametrize("seed", range(6))
def test_merge_near_optimal_on_small_families(seed):
    rng = random.Random(seed)
    depth = 10
    programs = []
    for _ in range(4):
        layers = [layer for layer in range(depth) if rng.random() > 0.25]
        for _ in range(rng.randint(0, 2)):
            size = rng.randint(1, 3)
            start = rng.randrange(0, len(layers) - size + 1)
            layers[start + size : start + size] = layers[start : start + size]
        programs.append(tuple(layers))
    programs = tuple(dict.fromkeys(programs))
    schedule = merge_programs(programs)
    check_schedule(schedule)
    assert len(schedule.steps) <= exact_merge_length(programs, by_layer=False) + 1


@pytest.mark.parametrize("seed", range(3))
def test_merge_many_programs_greedy_only(seed):
    # Enough programs that the alignment candidates are skipped (ALIGN_CELL_BUDGET).
    rng = random.Random(seed)
    programs = []
    for _ in range(120):
        layers = [layer for layer in range(30) if rng.random() > 0.2]
        for _ in range(rng.randint(0, 2)):
            size = rng.randint(1, 4)
            start = rng.randrange(0, len(layers) - size + 1)
            layers[start + size : start + size] = layers[start : start + size]
        programs.append(tuple(layers))
    programs = tuple(dict.fromkeys(programs))
    assert sum(map(len, programs)) * schedule_lower_bound(programs) > ALIGN_CELL_BUDGET
    check_schedule(merge_programs(programs))


@SETTINGS
@given(family_programs())
def test_identical_programs_collapse(program):
    schedule = merge_programs((program,))
    assert [(s.layer, s.slots[0][0]) for s in schedule.steps] == list(program_steps(program))
    assert all(s.groups == (0,) for s in schedule.steps)
    repeated = merge_programs((program, program, program))
    assert [(s.layer, s.slots[0][0]) for s in repeated.steps] == list(program_steps(program))
    assert all(s.groups == (0, 1, 2) for s in repeated.steps)


def test_merge_is_order_independent_and_cached():
    a, b, c = (0, 1, 2, 3, 4), (0, 2, 3, 2, 3, 4), (0, 1, 1, 4)
    first = merge_programs((a, b, c))
    second = merge_programs((c, a, b))
    check_schedule(first)
    check_schedule(second)
    rename = {0: 1, 1: 2, 2: 0}  # group in `first` -> group in `second`
    assert [
        (s.layer, tuple((p, tuple(sorted(rename[g] for g in gs))) for p, gs in s.slots))
        for s in first.steps
    ] == [(s.layer, s.slots) for s in second.steps]
    assert merge_programs((a, b, c)) is first


def test_merge_edge_cases():
    assert merge_programs(()).steps == ()
    schedule = merge_programs(((), (0, 1)))
    check_schedule(schedule)
    assert all(s.groups == (1,) for s in schedule.steps)
    crossed = merge_programs(((0, 1), (1, 0)))
    check_schedule(crossed)
    assert len(crossed.steps) == 3  # one of the layers must run twice


LOOPS_APART = ((0, 1, 2, 1, 2, 3), (0, 1, 0, 1, 2, 3))
"""Two programs that loop back over different segments: aligned on (layer, pass) steps they need
8 schedule steps, aligned on layers 7 (the lower bound), with one step running pass 2 of layer 2
for the first and pass 1 for the second."""


def test_merge_runs_different_passes_of_a_layer_in_one_step():
    schedule = merge_programs(LOOPS_APART)
    check_schedule(schedule)
    assert len(schedule.steps) == 7 == exact_merge_length(LOOPS_APART)
    assert schedule_lower_bound(LOOPS_APART) == 7  # distinct (layer, pass) steps: optimal
    split = [(s.layer, s.slots) for s in schedule.steps if len(s.slots) > 1]
    assert split == [(2, ((0, (1,)), (1, (0,))))]


def test_merge_shares_common_layers():
    # Majority alone would run layer 2 for groups 1 and 2 first, then again for group 0.
    schedule = merge_programs(((0, 1, 2, 3), (0, 2, 3, 4), (0, 2, 3, 5)))
    assert len(schedule.steps) == 6 == schedule_lower_bound(schedule.programs)


def test_schedule_cost():
    schedule = merge_programs(((0, 1, 2), (0, 2), ()))
    assert schedule_cost(schedule, [3, 5, 7]) == 3 * 3 + 5 * 2


# --------------------------------------------------------------------------- plan


def test_plan_homogeneous_batch_is_dense():
    program = (0, 1, 2, 1, 2, 3)
    plan = plan_batch([program] * 5, [1, 4, 0, 2, 1], "cpu")
    assert plan.is_dense and plan.num_dense_steps == len(program) == len(plan.steps)
    assert plan.num_tokens == 8
    assert all(s.token_index is None for s in plan.steps)
    assert all(len(s.slots) == 1 for s in plan.steps)
    first = plan.steps[0].slots[0]
    assert first.request_indices == (0, 1, 3, 4)  # the request with no tokens is left out
    assert first.request_index_tensor.dtype == torch.int32
    assert first.query_lens == (1, 4, 2, 1)
    assert first.query_start_loc.dtype == torch.int32
    assert first.query_start_loc.tolist() == [0, 1, 5, 7, 8]
    assert first.token_index is None and first.num_tokens == 8
    assert [(s.layer, s.slots[0].pass_index) for s in plan.steps] == list(program_steps(program))


def test_plan_token_indices():
    programs = [(0, 1, 2), (0, 2), (0, 1, 2), (), (0, 2)]
    lens = [2, 3, 1, 2, 0]
    plan = plan_batch(programs, lens, "cpu", num_tokens=10)
    assert isinstance(plan, BatchPlan)
    assert plan.num_tokens == 10
    assert plan.request_groups == (0, 1, 0, 2, -1)
    assert [(s.layer, s.slots[0].request_indices) for s in plan.steps] == [
        (0, (0, 1, 2)),
        (1, (0, 2)),
        (2, (0, 1, 2)),
    ]
    assert not any(s.is_dense for s in plan.steps)  # request 3 (empty program) skips all
    step1 = plan.steps[1]
    assert step1.token_index.dtype == torch.int64
    assert step1.token_index.tolist() == [0, 1, 5]
    (slot1,) = step1.slots
    assert slot1.token_index.tolist() == [0, 1, 5]
    assert slot1.request_index_tensor.tolist() == [0, 2]
    assert slot1.query_lens == (2, 1) and slot1.num_tokens == step1.num_tokens == 3
    assert slot1.query_start_loc.tolist() == [0, 2, 3]
    assert plan.steps[0].token_index.tolist() == [0, 1, 2, 3, 4, 5]
    assert plan.layer_token_evals == 6 + 3 + 6 == schedule_cost(plan.schedule, [3, 3, 2])
    with pytest.raises(ValueError):
        plan_batch(programs, lens[:-1], "cpu")
    with pytest.raises(ValueError):
        plan_batch(programs, lens, "cpu", num_tokens=3)


def test_plan_orders_a_split_step_by_pass():
    # Requests 0, 2 run LOOPS_APART[0], requests 1, 3 LOOPS_APART[1]; two tokens each.
    plan = plan_batch([LOOPS_APART[0], LOOPS_APART[1]] * 2, [2, 2, 2, 2], "cpu")
    (step,) = [s for s in plan.steps if len(s.slots) > 1]
    assert step.layer == 2 and [slot.pass_index for slot in step.slots] == [0, 1]
    first, second = step.slots
    assert first.request_indices == (1, 3) and second.request_indices == (0, 2)
    assert first.token_index.tolist() == [2, 3, 6, 7] and first.start == 0
    assert second.token_index.tolist() == [0, 1, 4, 5] and second.start == 4
    assert step.token_index.tolist() == [2, 3, 6, 7, 0, 1, 4, 5] and step.num_tokens == 8
    assert not step.is_dense  # every request runs it, but not on one pass


def test_plan_accepts_lists_and_arrays():
    # Row objects of an array are created on access: dedupe must not trust recycled ids.
    rows = np.array([[0, 1, 2], [0, 2, 1], [0, 1, 2], [2, 1, 0]])
    for programs in (rows, [list(r) for r in rows], (tuple(r) for r in rows.tolist())):
        plan = plan_batch(programs, [1, 2, 1, 1], "cpu")
        assert plan.request_groups == (0, 1, 0, 2)
        assert [tuple(p) for p in plan.schedule.programs] == [(0, 1, 2), (0, 2, 1), (2, 1, 0)]


def test_plan_empty_batch():
    plan = plan_batch([], [], "cpu")
    assert plan.steps == [] and plan.num_tokens == 0


# --------------------------------------------------------------------------- run


class ToyDecoder:
    """Row-wise toy decoder layers with the vLLM (hidden, residual) convention, float64."""

    def __init__(self, depth: int, hidden: int = 8, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.depth = depth
        self.weights = torch.randn(depth, hidden, hidden, generator=gen, dtype=torch.float64)
        self.weights /= hidden**0.5
        self.bias = torch.randn(depth, hidden, generator=gen, dtype=torch.float64)
        self.calls: list[tuple[int, int, int]] = []

    def layer(self, layer: int, pass_index: int | torch.Tensor, hidden, residual):
        residual = hidden if residual is None else hidden + residual
        x = residual * torch.rsqrt(residual.pow(2).mean(-1, keepdim=True) + 1e-6)
        out = torch.tanh(x @ self.weights[layer]) + (pass_index + 1) * self.bias[layer]
        return out, residual

    def layer_inplace(self, layer: int, pass_index: int | torch.Tensor, hidden, residual):
        """Same maths, written like vLLM's fused add + RMSNorm: modifies its inputs in place."""
        if residual is None:
            residual = hidden
            hidden = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + 1e-6)
        else:
            residual.add_(hidden)
            hidden.copy_(residual * torch.rsqrt(residual.pow(2).mean(-1, keepdim=True) + 1e-6))
        out = torch.tanh(hidden @ self.weights[layer]) + (pass_index + 1) * self.bias[layer]
        return out, residual

    @staticmethod
    def row_passes(step: StepPlan, rows: int) -> torch.Tensor:
        """Each row's pass index as a ``[rows, 1]`` column, from the step's slots."""
        assert rows == step.num_tokens
        start = 0
        for slot in step.slots:
            assert slot.start == start
            assert len(slot.request_indices) == len(slot.query_lens)
            assert len(slot.request_index_tensor) == len(slot.query_lens)
            offsets = [0, *itertools.accumulate(slot.query_lens)]
            assert slot.query_start_loc.tolist() == offsets
            if not step.is_dense:
                assert slot.num_tokens == sum(slot.query_lens) == len(slot.token_index)
                rows_of_slot = step.token_index[start : start + slot.num_tokens]
                assert torch.equal(slot.token_index, rows_of_slot)
            start += slot.num_tokens
        assert start == rows
        counts = torch.tensor([slot.num_tokens for slot in step.slots])
        passes = torch.tensor([float(slot.pass_index) for slot in step.slots], dtype=torch.float64)
        return passes.repeat_interleave(counts).unsqueeze(1)

    def layer_fn(self, step: StepPlan, hidden, residual):
        passes = self.row_passes(step, hidden.shape[0]).to(hidden.device)
        self.calls.append((step.layer, len(step.slots), hidden.shape[0]))
        return self.layer(step.layer, passes, hidden, residual)

    def layer_fn_inplace(self, step: StepPlan, hidden, residual):
        passes = self.row_passes(step, hidden.shape[0]).to(hidden.device)
        return self.layer_inplace(step.layer, passes, hidden, residual)

    def reference(self, program, hidden):
        residual = None
        for layer, pass_index in program_steps(program):
            hidden, residual = self.layer(layer, pass_index, hidden, residual)
        return hidden, residual


def run_and_compare(model: ToyDecoder, programs, lens, seed: int = 0) -> BatchPlan:
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(sum(lens), model.weights.shape[1], generator=gen, dtype=torch.float64)
    original = hidden.clone()
    plan = plan_batch(programs, lens, "cpu")
    out_hidden, out_residual = run_plan(plan, hidden, None, model.layer_fn)
    assert torch.equal(hidden, original), "run_plan must not modify its input"
    if out_residual is None:
        assert all(len(p) == 0 for p, n in zip(programs, lens, strict=True) if n)
        out_residual = torch.zeros_like(out_hidden)
    start = 0
    for program, n in zip(programs, lens, strict=True):
        ref_hidden, ref_residual = model.reference(program, original[start : start + n])
        if ref_residual is None:
            ref_residual = torch.zeros_like(ref_hidden)
        torch.testing.assert_close(out_hidden[start : start + n], ref_hidden, rtol=1e-12, atol=0)
        torch.testing.assert_close(
            out_residual[start : start + n], ref_residual, rtol=1e-12, atol=1e-14
        )
        start += n
    return plan


def test_run_plan_mixed_batch():
    depth = 6
    model = ToyDecoder(depth)
    full = tuple(range(depth))
    programs = [
        full,
        (),
        full + full,  # length 2D
        (0, 1, 2, 1, 2, 3, 4, 5),
        (0, 2, 4),
        full,
        (5, 4, 3, 2, 1, 0),
        (0, 2, 4),
    ]
    lens = [3, 2, 1, 4, 0, 1, 2, 5]
    plan = run_and_compare(model, programs, lens)
    assert not plan.is_dense
    # Every token ran exactly its own program.
    assert sum(n for *_, n in model.calls) == sum(
        len(p) * n for p, n in zip(programs, lens, strict=True)
    )


def test_run_plan_homogeneous_batch_is_dense():
    model = ToyDecoder(5)
    program = (0, 1, 2, 3, 2, 3, 4)
    plan = run_and_compare(model, [program] * 4, [1, 3, 2, 1])
    assert plan.is_dense
    assert [n for *_, n in model.calls] == [7] * len(program)


def test_run_plan_split_step_runs_each_pass():
    model = ToyDecoder(4)
    plan = run_and_compare(model, [LOOPS_APART[0], LOOPS_APART[1]] * 2, [2, 1, 3, 2])
    assert (2, 2, 8) in model.calls  # layer 2, two slots, all 8 rows in one call
    assert len(model.calls) == len(plan.steps) == 7


def test_run_plan_first_step_not_dense():
    # Request 1 skips layer 0: the first step is non-dense while residual is None.
    model = ToyDecoder(4)
    programs = [(0, 1, 2, 3), (1, 2, 3), (0, 1, 2, 3, 3)]
    plan = run_and_compare(model, programs, [2, 3, 1])
    assert not plan.steps[0].is_dense and plan.steps[1].is_dense


def test_run_plan_dense_then_partial():
    # Dense first steps pass residual=None to the layer (stock path), then a partial step.
    model = ToyDecoder(4)
    seen = []

    def layer_fn(step, hidden, residual):
        seen.append(residual is None)
        return model.layer_fn(step, hidden, residual)

    programs = [(0, 1, 2, 3), (0, 1, 3)]
    plan = plan_batch(programs, [2, 2], "cpu")
    hidden = torch.randn(4, 8, dtype=torch.float64)
    run_plan(plan, hidden, None, layer_fn)
    assert seen == [True, False, False, False]
    run_and_compare(ToyDecoder(4), programs, [2, 2])


@pytest.mark.parametrize("first_dense", [True, False])
def test_run_plan_with_in_place_layers(first_dense):
    model = ToyDecoder(5)
    programs = [(0, 1, 2, 3, 4), (0, 1, 3, 3, 4), (0, 2, 4), (0, 1, 2, 1, 2, 3, 4)]
    if not first_dense:
        programs[2] = (1, 2, 4)
    lens = [2, 1, 3, 2]
    hidden = torch.randn(sum(lens), 8, dtype=torch.float64)
    plan = plan_batch(programs, lens, "cpu")
    assert plan.steps[0].is_dense == first_dense
    out, residual = run_plan(plan, hidden.clone(), None, model.layer_fn_inplace)
    start = 0
    for program, n in zip(programs, lens, strict=True):
        ref_hidden, ref_residual = model.reference(program, hidden[start : start + n])
        torch.testing.assert_close(out[start : start + n], ref_hidden, rtol=1e-12, atol=0)
        torch.testing.assert_close(residual[start : start + n], ref_residual, rtol=1e-12, atol=0)
        start += n


def test_run_plan_no_layers():
    hidden = torch.randn(3, 8, dtype=torch.float64)
    plan = plan_batch([(), ()], [1, 2], "cpu")
    out, residual = run_plan(plan, hidden, None, ToyDecoder(2).layer_fn)
    assert residual is None and out is hidden


def test_run_plan_rejects_wrong_row_count():
    plan = plan_batch([(0,)], [2], "cpu")
    with pytest.raises(ValueError):
        run_plan(plan, torch.zeros(3, 8), None, ToyDecoder(1).layer_fn)


@settings(derandomize=True, deadline=None, max_examples=40)
@given(
    st.lists(
        st.tuples(family_programs(depth=5) | arbitrary_programs(5, 10), st.integers(0, 3)),
        min_size=1,
        max_size=8,
    )
)
def test_run_plan_matches_per_request_reference(requests):
    programs = [p for p, _ in requests]
    lens = [n for _, n in requests]
    run_and_compare(ToyDecoder(5), programs, lens)


def test_layer_token_evals_match_programs():
    rng = random.Random(0)
    programs = [tuple(rng.randrange(6) for _ in range(rng.randint(0, 9))) for _ in range(12)]
    lens = [rng.randint(0, 4) for _ in programs]
    plan = plan_batch(programs, lens, "cpu")
    expected = sum(len(p) * n for p, n in zip(programs, lens, strict=True))
    assert plan.layer_token_evals == expected
    assert sum(1 for _ in itertools.chain.from_iterable(s.groups for s in plan.steps)) >= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_run_plan_cuda_matches_cpu():
    depth = 6
    cpu_model = ToyDecoder(depth)
    programs = [(0, 1, 2, 3, 4, 5), (0, 2, 4), (), (0, 1, 2, 1, 2, 3, 4, 5), (1, 3, 5)]
    lens = [3, 1, 2, 4, 0]
    hidden = torch.randn(sum(lens), 8, dtype=torch.float64)
    cpu_plan = plan_batch(programs, lens, "cpu")
    expected = run_plan(cpu_plan, hidden, None, cpu_model.layer_fn)

    cuda_model = ToyDecoder(depth)
    cuda_model.weights = cuda_model.weights.cuda()
    cuda_model.bias = cuda_model.bias.cuda()
    cuda_plan = plan_batch(programs, lens, "cuda")
    assert all(s.token_index is None or s.token_index.is_cuda for s in cuda_plan.steps)
    assert all(
        slot.request_index_tensor.device.type == "cpu" for s in cuda_plan.steps for slot in s.slots
    )
    got = run_plan(cuda_plan, hidden.cuda(), None, cuda_model.layer_fn)
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-10, atol=1e-12)
