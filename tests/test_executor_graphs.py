"""The graphed plan runner (executor/graphs.py) run eagerly on CPU: padded buckets, static index
buffers and the sink row give exactly what ``run_plan`` gives, and pieces are made once per
(layer, bucket, dense or gathered), never per batch."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from polar_vllm.executor import StepPlan, plan_batch, run_plan
from polar_vllm.executor.graphs import GraphedPlanRunner, bucket_for

DEPTH = 6
HIDDEN = 16
BUCKETS = (1, 2, 4, 8, 16, 32)
PROGRAMS = (
    tuple(range(DEPTH)),
    (0, 1, 2, 3, 2, 3, 4, 5),  # a repeated segment: its steps run two passes at once
    (0, 2, 3, 5),
    (0, 1, 1, 2, 4, 5),
    (),
)


class ToyLayers:
    """Row-wise pieces (norm and projections) and an attention that depends on each row's
    KV slot: rows of a step's ``i``-th slot are scaled by ``pass_index + 2``."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.q = [torch.randn(HIDDEN, HIDDEN, generator=generator) / 4 for _ in range(DEPTH)]
        self.o = [torch.randn(HIDDEN, HIDDEN, generator=generator) / 4 for _ in range(DEPTH)]

    def pre(self, layer: int, hidden: torch.Tensor, residual: torch.Tensor):
        residual = hidden + residual
        return F.linear(F.rms_norm(residual, (HIDDEN,)), self.q[layer]), residual

    def attention(self, step: StepPlan, queries: torch.Tensor) -> torch.Tensor:
        scale = torch.cat(
            [torch.full((slot.num_tokens, 1), slot.pass_index + 2.0) for slot in step.slots]
        )
        return torch.tanh(queries) * scale

    def post(self, layer: int, attended: torch.Tensor, residual: torch.Tensor):
        return F.linear(attended, self.o[layer]), residual

    def layer_fn(self, step: StepPlan, hidden: torch.Tensor, residual: torch.Tensor):
        queries, residual = self.pre(step.layer, hidden, residual)
        return self.post(step.layer, self.attention(step, queries), residual)


def _runner(toy: ToyLayers, capture: bool = False) -> GraphedPlanRunner:
    """A runner of the toy's pieces for up to 32 rows on CPU."""
    return GraphedPlanRunner(
        toy.pre,
        toy.post,
        toy.attention,
        hidden_size=HIDDEN,
        max_tokens=32,
        dtype=torch.float32,
        device="cpu",
        buckets=BUCKETS,
        capture=capture,
    )


def _batch(seed: int, requests: int, decode: bool) -> tuple[list[tuple[int, ...]], list[int]]:
    rng = random.Random(seed)
    programs = [PROGRAMS[rng.randrange(len(PROGRAMS))] for _ in range(requests)]
    lens = [1 if decode else rng.randint(1, 4) for _ in range(requests)]
    return programs, lens


def test_bucket_is_the_smallest_that_holds_the_rows():
    assert [bucket_for(n, BUCKETS) for n in (1, 2, 3, 5, 16, 17, 32)] == [1, 2, 4, 8, 16, 32, 32]
    with pytest.raises(ValueError, match="33 rows exceed the largest captured bucket 32"):
        bucket_for(33, BUCKETS)


@pytest.mark.parametrize(("requests", "decode"), [(1, True), (3, True), (13, True), (7, False)])
def test_graphed_runner_equals_run_plan(requests, decode):
    toy = ToyLayers()
    runner = _runner(toy)
    for seed in range(3):
        programs, lens = _batch(seed + 10 * requests, requests, decode)
        plan = plan_batch(programs, lens, "cpu")
        hidden = torch.randn(plan.num_tokens, HIDDEN, generator=torch.Generator().manual_seed(seed))
        expected = run_plan(plan, hidden.clone(), torch.zeros_like(hidden), toy.layer_fn)
        got = runner.run(plan, hidden)
        for want, have in zip(expected, got, strict=True):
            torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-5)


def test_pieces_are_made_once_per_layer_bucket_and_kind():
    toy = ToyLayers()
    runner = _runner(toy)
    programs, lens = _batch(1, 12, True)
    hidden = torch.randn(12, HIDDEN)
    plan = plan_batch(programs, lens, "cpu")
    runner.run(plan, hidden)
    kinds = {
        (step.layer, step.is_dense, bucket_for(step.num_tokens, BUCKETS)) for step in plan.steps
    }
    assert runner.num_graphs == 2 * len(kinds)
    # The same program mix over other rows (requests reordered): the same step sizes and
    # buckets, so every piece is replayed and none is made.
    for seed in range(3):
        random.Random(seed).shuffle(programs)
        runner.run(plan_batch(programs, lens, "cpu"), hidden)
    assert runner.num_graphs == 2 * len(kinds)


def test_capture_needs_cuda():
    toy = ToyLayers()
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        _runner(toy, capture=True)
