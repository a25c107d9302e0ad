"""Running a :class:`~polar_vllm.executor.plan.BatchPlan` over the hidden states of a batch."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .plan import BatchPlan, StepPlan

__all__ = ["LayerFn", "run_plan"]

LayerFn = Callable[[StepPlan, torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]
"""``layer_fn(step, hidden_states, residual) -> (hidden_states, residual)``.

Runs decoder layer ``step.layer`` on the rows it is given: all rows of the batch for a dense step,
else the rows ``step.token_index``; the rows of ``step.slots[i]`` run pass
``step.slots[i].pass_index`` of the layer (its own KV slot). ``residual`` is ``None`` only when
no layer has run yet (the stock vLLM first-layer path).
"""


def run_plan(
    plan: BatchPlan,
    hidden_states: torch.Tensor,
    residual: torch.Tensor | None,
    layer_fn: LayerFn,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run every step of ``plan`` and return the final ``(hidden_states, residual)``.

    Dense steps call ``layer_fn`` on the whole batch. Other steps gather their rows, call
    ``layer_fn`` on them and scatter the results back (``index_copy_``); rows that skip a step
    keep their hidden states and residual unchanged.

    Around non-dense steps, hidden states and residual are kept stacked in one ``[2, tokens,
    ...]`` buffer that this function owns, so a step gathers both with one ``index_select`` and
    consecutive non-dense steps need no re-stacking (three kernels per step: one gather, two
    scatters; one more after a dense step). The caller's tensors are never written by the
    scatter. ``layer_fn`` gets contiguous tensors and may modify them in place, as stock vLLM
    layers do.

    Residual handling: vLLM decoder layers carry ``(hidden_states, residual)`` and fuse the
    residual add into the next norm; the first layer gets ``residual=None`` and starts the
    residual stream from its input. While ``residual`` is ``None`` dense steps pass ``None`` on,
    as a stock forward does. The first non-dense step that finds ``residual is None``
    materializes ``residual = zeros_like(hidden_states)`` for every row: the fused add with a zero
    residual equals the no-residual path (``norm(h + 0) == norm(h)``, residual stream ``h``), and
    rows that skip the step carry ``hidden + 0``, their unchanged input. A final norm must
    therefore add ``residual`` (it may be zeros) as usual. ``residual`` is returned as ``None`` only
    if no step ran.
    """
    if hidden_states.shape[0] != plan.num_tokens:
        raise ValueError(
            f"hidden_states has {hidden_states.shape[0]} rows, plan has {plan.num_tokens} tokens"
        )
    stacked: torch.Tensor | None = None  # [2, tokens, ...]: (hidden, residual) when in use
    for step in plan.steps:
        index = step.token_index
        if index is None:
            if stacked is not None:
                hidden_states, residual = stacked[0], stacked[1]
                stacked = None
            hidden_states, residual = layer_fn(step, hidden_states, residual)
            continue
        if stacked is None:
            if residual is None:
                stacked = hidden_states.new_zeros((2, *hidden_states.shape))
                stacked[0].copy_(hidden_states)
            else:
                stacked = torch.stack((hidden_states, residual))
        rows = stacked.index_select(1, index)
        hidden_sub, residual_sub = layer_fn(step, rows[0], rows[1])
        stacked[0].index_copy_(0, index, hidden_sub)
        stacked[1].index_copy_(0, index, residual_sub)
    if stacked is not None:
        hidden_states, residual = stacked[0], stacked[1]
    return hidden_states, residual
