"""Running batch plans as replayed graphs: the vLLM-free half of PoLar's CUDA-graph design.

A CUDA graph replays fixed kernels on fixed addresses, while a PoLar batch's steps run varying
row sets. So (docs/architecture.md, "CUDA graphs"):

* a decoder layer is two *pieces* around its attention, ``pre`` (input norm, QKV projection,
  rotary embedding) and ``post`` (output projection, norm, MLP); attention runs between them,
  outside any graph, as in vLLM's piecewise mode;
* each piece is captured once per (layer, padded row-count bucket, dense or gathered): a step
  of ``n`` rows replays the graph of the smallest bucket ``>= n`` (:func:`bucket_for`);
* the residual stream lives in one static buffer ``[2, max_tokens + 1, hidden]`` (hidden
  states and residual; the last row is a *sink*). A gathered piece reads its rows through a
  static index buffer of its bucket and the post piece scatters back through it; the index
  buffer is refilled in place before each replay (as vLLM's LoRA path refills its token
  indices), its padding entries point at the sink row, so padded rows never touch a real one;
* a dense step (every row runs it) reads and writes the first ``bucket`` rows directly.

:class:`GraphedPlanRunner` does all of this on any device; ``capture=True`` (CUDA only) records
each piece as a ``torch.cuda.CUDAGraph`` on first use, ``capture=False`` runs the same
static-buffer code eagerly, which is how the CPU tests check buckets, padding and indices
against :func:`~polar_vllm.executor.execution.run_plan`.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .plan import BatchPlan, StepPlan

__all__ = [
    "DEFAULT_BUCKETS",
    "AttentionFn",
    "GraphedPlanRunner",
    "PieceFn",
    "bucket_for",
]

DEFAULT_BUCKETS: tuple[int, ...] = (1, 2, 4, 8, *range(16, 257, 16), *range(288, 513, 32))
"""Padded row counts a piece is captured for (vLLM's capture sizes follow the same pattern)."""

PieceFn = Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``piece(layer, x, residual) -> (y, residual)``: one layer's pre or post piece, row-wise."""

AttentionFn = Callable[[StepPlan, torch.Tensor], torch.Tensor]
"""``attention(step, queries) -> outputs`` for the ``step.num_tokens`` real rows of a step, each
slot's rows on its own KV cache (runs between the pieces, never captured)."""


def bucket_for(rows: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds ``rows`` rows (``buckets`` increasing)."""
    position = bisect.bisect_left(buckets, rows)
    if position == len(buckets):
        raise ValueError(f"{rows} rows exceed the largest captured bucket {buckets[-1]}")
    return buckets[position]


class _Piece:
    """One piece on fixed input views with fixed outputs; made by running it once."""

    def __init__(self, run: Callable[[], tuple[torch.Tensor, torch.Tensor]], pool: Any) -> None:
        self.run = run
        self.graph: torch.cuda.CUDAGraph | None = None
        if pool is not None:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                run()  # warm-up outside the capture, as CUDA graphs need
            torch.cuda.current_stream().wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            # One memory pool for all pieces: what a capture frees, later captures reuse
            # (pieces replay one after another); outputs stay held by their pieces.
            with torch.cuda.graph(self.graph, pool=pool):
                self.outputs = run()
            self.graph.replay()  # capturing ran nothing; pieces are idempotent
        else:
            self.outputs = run()

    def replay(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the piece again; its outputs are ``self.outputs`` (fixed tensors when captured)."""
        if self.graph is not None:
            self.graph.replay()
        else:
            self.outputs = self.run()
        return self.outputs


class GraphedPlanRunner:
    """Runs :class:`~polar_vllm.executor.plan.BatchPlan` s of up to ``max_tokens`` rows with
    each layer's pieces replayed per padded bucket, attention between them.

    Args:
        pre, post: the layer pieces (:data:`PieceFn`); ``pre`` returns the attention input
            (queries, or whatever ``attention`` takes) and the residual, ``post`` takes the
            attention output and that residual.
        attention: :data:`AttentionFn`.
        hidden_size, max_tokens, dtype, device: the static buffers' shape and place.
        buckets: padded row counts (increasing; the largest must be ``>= max_tokens``).
        capture: record CUDA graphs (CUDA only); otherwise run the pieces eagerly.
    """

    def __init__(
        self,
        pre: PieceFn,
        post: PieceFn,
        attention: AttentionFn,
        *,
        hidden_size: int,
        max_tokens: int,
        dtype: torch.dtype,
        device: torch.device | str,
        buckets: Sequence[int] = DEFAULT_BUCKETS,
        capture: bool = False,
    ) -> None:
        device = torch.device(device)
        if capture and device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.buckets = (*(b for b in buckets if b < max_tokens), max_tokens)
        self.pre, self.post, self.attention = pre, post, attention
        self.pool = torch.cuda.graph_pool_handle() if capture else None
        self.sink = max_tokens  # the stream's last row
        self.stream = torch.zeros((2, max_tokens + 1, hidden_size), dtype=dtype, device=device)
        self.index = {
            b: torch.full((b,), self.sink, dtype=torch.long, device=device) for b in self.buckets
        }
        self.attention_out: dict[int, torch.Tensor] = {}
        self.pieces: dict[tuple[str, int, int, bool], _Piece] = {}

    @property
    def num_graphs(self) -> int:
        """Pieces captured so far (one per piece, layer, bucket and dense or gathered)."""
        return len(self.pieces)

    def _rows(self, bucket: int, dense: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if dense:
            return self.stream[0, :bucket], self.stream[1, :bucket]
        rows = self.stream.index_select(1, self.index[bucket])  # [2, bucket, hidden]
        return rows[0], rows[1]

    def _replay(self, kind: str, layer: int, bucket: int, dense: bool) -> tuple[torch.Tensor, ...]:
        """Run piece ``kind`` of ``layer`` on a bucket (made, and captured, on first use)."""
        key = (kind, layer, bucket, dense)
        piece = self.pieces.get(key)
        if piece is not None:
            return piece.replay()
        if kind == "pre":

            def run() -> tuple[torch.Tensor, torch.Tensor]:
                return self.pre(layer, *self._rows(bucket, dense))

        else:
            pre_outputs = self.pieces["pre", layer, bucket, dense]
            attention_in = self.attention_out[bucket]

            def run() -> tuple[torch.Tensor, torch.Tensor]:
                hidden, residual = self.post(layer, attention_in, pre_outputs.outputs[1])
                if dense:
                    self.stream[0, :bucket].copy_(hidden)
                    self.stream[1, :bucket].copy_(residual)
                else:
                    self.stream[0].index_copy_(0, self.index[bucket], hidden)
                    self.stream[1].index_copy_(0, self.index[bucket], residual)
                return hidden, residual

        self.pieces[key] = _Piece(run, self.pool)
        return self.pieces[key].outputs

    def _run_step(self, step: StepPlan, num_tokens: int) -> None:
        rows = num_tokens if step.is_dense else step.num_tokens
        bucket = bucket_for(rows, self.buckets)
        if not step.is_dense:
            index = self.index[bucket]
            index[rows:].fill_(self.sink)
            index[:rows].copy_(step.token_index, non_blocking=True)
        queries = self._replay("pre", step.layer, bucket, step.is_dense)[0]
        out = self.attention(step, queries[:rows])
        if bucket not in self.attention_out:
            self.attention_out[bucket] = out.new_zeros((bucket, *out.shape[1:]))
        self.attention_out[bucket][:rows].copy_(out)
        self._replay("post", step.layer, bucket, step.is_dense)

    def run(
        self, plan: BatchPlan, hidden_states: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run ``plan`` from ``hidden_states`` (the embeddings; the residual starts at zero) and
        return the final ``(hidden_states, residual)`` of its ``plan.num_tokens`` rows (views of
        the static stream, valid until the next run)."""
        num_tokens = plan.num_tokens
        if num_tokens > self.sink:
            raise ValueError(f"{num_tokens} rows exceed max_tokens={self.sink}")
        self.stream[0, :num_tokens].copy_(hidden_states)
        self.stream[1, :num_tokens].zero_()
        for step in plan.steps:
            self._run_step(step, num_tokens)
        return self.stream[0, :num_tokens], self.stream[1, :num_tokens]
