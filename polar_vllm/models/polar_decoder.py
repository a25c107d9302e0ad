"""The PoLar decoder loop, shared by the Llama and Qwen2 PoLar model classes.

A PoLar model is vLLM's own ``*ForCausalLM`` with one change: ``forward`` runs each request's
layer program instead of layers ``0..D-1``. The stock embedding, decoder layers, final norm,
LM head and weight loading are reused as they are. Per forward:

1. the model runner publishes the programs and scheduled token counts of the batch's requests
   (:meth:`PolarCausalLMMixin.polar_batch`); warm-up and profiling runs publish nothing and
   run the full program;
2. the executor core merges the distinct programs into one schedule of layer steps and
   resolves each step to the token rows that run it, per pass of the layer;
3. a step every row runs on one pass calls the layer on the whole batch; any other step gathers
   its rows, runs the layer with attention metadata restricted to its requests, and scatters
   back. A step that runs different passes for different requests runs the layer once and
   splits only its attention, each pass on its own KV slot.

Pass ``p`` of layer ``l`` reads and writes KV slot ``p * D + l``: its own ``Attention`` object
(``model.polar_slots.{p * D + l}``) behind the layer's projections. Tokens that skip a
(layer, pass) never touch its slot, so generating with the cache computes exactly what
recomputing the whole sequence through the program would.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from polar_vllm.compat.attention_metadata import subset_attention_metadata
from polar_vllm.compat.attention_slots import (
    attention_slot,
    forward_context_entries,
    make_slot_attention,
    split_attention,
)
from polar_vllm.config import PolarConfig, polar_settings
from polar_vllm.executor import SlotRows, StepPlan, plan_batch, run_plan
from polar_vllm.program import Program

__all__ = ["PolarBatch", "PolarCausalLMMixin"]


@dataclass(frozen=True)
class PolarBatch:
    """The requests of one forward, in batch order: their programs and scheduled tokens."""

    programs: Sequence[Program]
    query_lens: Sequence[int]


class _StepRunner:
    """Runs one schedule step of one forward (the executor core's ``LayerFn``)."""

    def __init__(self, model: PolarCausalLMMixin, positions: torch.Tensor) -> None:
        self.model = model
        self.positions = positions
        self.sub_batches: dict[tuple[int, tuple[int, ...]], tuple[Any, torch.Tensor]] = {}

    def __call__(
        self, step: StepPlan, hidden_states: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        layer = self.model.model.layers[step.layer]
        attention = layer.self_attn.attn
        if step.is_dense:
            slot_name = self.model.polar_slot_name(step.layer, step.slots[0].pass_index)
            with attention_slot(attention, slot_name):
                return layer(self.positions, hidden_states, residual)
        positions = self.positions.index_select(0, step.token_index)
        with ExitStack() as stack:
            blocks = []
            for slot in step.slots:
                slot_name = self.model.polar_slot_name(step.layer, slot.pass_index)
                metadata, slot_mapping = self._sub_batch(slot, slot_name, attention)
                stack.enter_context(forward_context_entries(slot_name, metadata, slot_mapping))
                blocks.append((slot_name, slot.num_tokens))
            stack.enter_context(split_attention(attention, blocks))
            return layer(positions, hidden_states, residual)

    def _sub_batch(
        self, slot: SlotRows, slot_name: str, attention: nn.Module
    ) -> tuple[Any, torch.Tensor]:
        """Attention metadata and slot mapping of ``slot``'s requests (cached per forward)."""
        from vllm.forward_context import get_forward_context

        context = get_forward_context()
        batch_metadata = context.attn_metadata[slot_name]
        key = (id(batch_metadata), slot.request_indices)
        if key not in self.sub_batches:
            slot_mapping = context.slot_mapping[slot_name].index_select(0, slot.token_index)
            metadata = subset_attention_metadata(
                batch_metadata,
                slot.request_index_tensor,
                slot.query_lens,
                slot_mapping,
                attention,
                self.model.polar_dtype,
            )
            self.sub_batches[key] = metadata, slot_mapping
        return self.sub_batches[key]


class PolarCausalLMMixin:
    """Mixed in before a vLLM ``*ForCausalLM`` class to make its forward run layer programs.

    The subclass calls :meth:`init_polar` at the end of ``__init__``."""

    model: nn.Module

    def init_polar(self, vllm_config: Any, prefix: str = "") -> None:
        """Read the PoLar settings and create the extra-pass KV slots."""
        _check_supported(vllm_config)
        depth = len(self.model.layers)
        settings = polar_settings(vllm_config.additional_config)
        self.polar_config = PolarConfig.from_dict(settings, depth)
        self.polar_dtype = vllm_config.model_config.dtype
        self._polar_batch: PolarBatch | None = None
        model_prefix = f"{prefix}.model" if prefix else "model"
        self.model.polar_slots = nn.ModuleDict()
        self._slot_names: dict[tuple[int, int], str] = {}
        for layer_index in range(depth):
            base = self.model.layers[layer_index].self_attn.attn
            self._slot_names[layer_index, 0] = base.layer_name
            for pass_index in range(1, self.polar_config.slot_passes(layer_index)):
                slot = pass_index * depth + layer_index
                name = f"{model_prefix}.polar_slots.{slot}"
                self.model.polar_slots[str(slot)] = make_slot_attention(base, name, vllm_config)
                self._slot_names[layer_index, pass_index] = name

    def polar_slot_name(self, layer_index: int, pass_index: int) -> str:
        """The layer name of the KV slot of pass ``pass_index`` of layer ``layer_index``."""
        try:
            return self._slot_names[layer_index, pass_index]
        except KeyError:
            raise ValueError(
                f"layer {layer_index} has no KV slot for pass {pass_index + 1} "
                f"(loop_layers / max_passes settings)"
            ) from None

    @contextmanager
    def polar_batch(self, batch: PolarBatch | None) -> Iterator[None]:
        """Within the block, forwards run the programs of ``batch``."""
        self._polar_batch = batch
        try:
            yield
        finally:
            self._polar_batch = None

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: Any = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states after the final norm, each request having run its own program."""
        if intermediate_tensors is not None:
            raise NotImplementedError("PoLar does not support pipeline parallelism")
        decoder = self.model
        if inputs_embeds is not None:
            hidden_states = inputs_embeds
        else:
            hidden_states = decoder.embed_input_ids(input_ids)
        num_tokens = hidden_states.shape[0]
        batch = self._polar_batch
        if batch is None:
            batch = PolarBatch([self.polar_config.full], [num_tokens])
        plan = plan_batch(
            batch.programs, batch.query_lens, hidden_states.device, num_tokens=num_tokens
        )
        hidden_states, residual = run_plan(plan, hidden_states, None, _StepRunner(self, positions))
        if residual is None:
            return decoder.norm(hidden_states)
        hidden_states, _ = decoder.norm(hidden_states, residual)
        return hidden_states


def _check_supported(vllm_config: Any) -> None:
    """Refuse configurations the PoLar decoder loop would run wrongly."""
    problems = []
    if vllm_config.parallel_config.pipeline_parallel_size > 1:
        problems.append("pipeline parallelism")
    if vllm_config.speculative_config is not None:
        problems.append("speculative decoding")
    if not vllm_config.model_config.enforce_eager:
        problems.append("CUDA graphs / torch.compile (set enforce_eager=True)")
    if vllm_config.use_v2_model_runner:
        problems.append("the V2 model runner (set VLLM_USE_V2_MODEL_RUNNER=0)")
    if problems:
        raise NotImplementedError(f"PoLar does not support {', '.join(problems)} yet")
