"""The PoLar decoder loop, shared by every PoLar model class (``models.POLAR_FAMILIES``).

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

Each layer's own ``Attention`` is routed
(:func:`~polar_vllm.compat.attention_slots.route_attention`): the step runner is the attention
call of the running forward and picks the slot and the sub-batch. So in vLLM's default
compiled mode each layer runs its compiled code
(:class:`~polar_vllm.compat.compiled_layers.CompiledLayers`) with the attention between its
compiled pieces, and with ``enforce_eager`` the layer itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from polar_vllm.compat.attention_metadata import (
    check_attention_backend,
    subset_attention_metadata,
)
from polar_vllm.compat.attention_slots import (
    ContextTables,
    SlotBlock,
    attend_on_slots,
    forward_context_tables,
    make_slot_attention,
    route_attention,
    routing_to,
    slot_layer_name,
)
from polar_vllm.compat.compiled_layers import CompiledLayers, compiled_path_refusal, runs_compiled
from polar_vllm.engine.config import PolarConfig, polar_settings
from polar_vllm.engine.request_programs import PolarBatch
from polar_vllm.executor import BatchPlan, StepPlan, plan_batch, run_plan
from polar_vllm.models.contract import check_decoder_contract

__all__ = ["PolarCausalLMMixin"]


class _StepRunner:
    """Runs one schedule step of one forward (the executor core's ``LayerFn``), and the
    attention of its layer (the active attention call of the routed attention layers).

    Everything a sub-batch step needs besides its rows (the attention metadata and slot mapping
    of its requests, per KV slot, and their positions) is built for all steps of the plan
    before the first layer runs: one pass over small tensors, instead of bookkeeping between
    layer calls whose weights have just pushed it out of the CPU caches.
    """

    def __init__(self, model: PolarCausalLMMixin, positions: torch.Tensor, plan: BatchPlan) -> None:
        self.model = model
        self.positions = positions
        self.tables: ContextTables | None = None
        self.step_inputs: dict[int, tuple[list[SlotBlock], torch.Tensor]] = {}
        self.step: StepPlan | None = None  # the step whose layer runs now
        if not plan.is_dense:
            self._prepare_sub_batches(plan)

    def __call__(
        self, step: StepPlan, hidden_states: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.step = step
        positions = self.positions if step.is_dense else self.step_inputs[id(step)][1]
        return self.model.polar_layer_call(step.layer, positions, hidden_states, residual)

    def attend(
        self, layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> torch.Tensor:
        """The attention of layer ``layer`` in the running step, on its rows' KV slots."""
        step = self.step
        if step is None or step.layer != layer:
            raise RuntimeError(f"attention of layer {layer} called outside its schedule step")
        attention = self.model.model.layers[layer].self_attn.attn
        if step.is_dense:
            slot_name = self.model.polar_slot_name(layer, step.slots[0].pass_index)
            return attention.slot_forward(slot_name, query, key, value)
        blocks = self.step_inputs[id(step)][0]
        return attend_on_slots(attention, self.tables, blocks, query, key, value)

    def _prepare_sub_batches(self, plan: BatchPlan) -> None:
        """Fill ``step_inputs`` for every sub-batch step of ``plan``.

        A request set's metadata is built once per KV-cache group (layers sharing the batch's
        metadata object) and a row set's positions once, however many steps use them.
        """
        self.tables = metadata_by_layer, slots_by_layer = forward_context_tables()
        sub_batches: dict[tuple[int, tuple[int, ...]], tuple[Any, torch.Tensor]] = {}
        positions_of_rows: dict[int, torch.Tensor] = {}
        for step in plan.steps:
            if step.is_dense:
                continue
            attention = self.model.model.layers[step.layer].self_attn.attn
            blocks: list[SlotBlock] = []
            for slot in step.slots:
                slot_name = self.model.polar_slot_name(step.layer, slot.pass_index)
                batch_metadata = metadata_by_layer[slot_name]
                key = (id(batch_metadata), slot.request_indices)
                if key not in sub_batches:
                    slot_mapping = slots_by_layer[slot_name].index_select(0, slot.token_index)
                    metadata = subset_attention_metadata(
                        batch_metadata,
                        slot.request_index_tensor,
                        slot.query_lens,
                        slot_mapping,
                        attention,
                        self.model.polar_dtype,
                        slot.query_start_loc,
                    )
                    sub_batches[key] = metadata, slot_mapping
                blocks.append((slot_name, *sub_batches[key], slot.num_tokens))
            rows = step.token_index
            if id(rows) not in positions_of_rows:
                positions_of_rows[id(rows)] = self.positions.index_select(0, rows)
            self.step_inputs[id(step)] = blocks, positions_of_rows[id(rows)]


class PolarCausalLMMixin:
    """Mixed in before a vLLM ``*ForCausalLM`` class to make its forward run layer programs.

    ``class PolarXForCausalLM(PolarCausalLMMixin, XForCausalLM)`` is a whole PoLar class: the
    mixin builds vLLM's model, checks that its decoder follows the contract of
    :mod:`polar_vllm.models.contract`, then adds the extra-pass KV slots."""

    model: nn.Module

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.init_polar(vllm_config, prefix)

    def init_polar(self, vllm_config: Any, prefix: str = "") -> None:
        """Read the PoLar settings and create the extra-pass KV slots."""
        _check_supported(vllm_config)
        check_decoder_contract(self)
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
            check_attention_backend(base.attn_backend.get_name())
            route_attention(base, layer_index)
            self._slot_names[layer_index, 0] = base.layer_name
            for pass_index in range(1, self.polar_config.slot_passes(layer_index)):
                slot = pass_index * depth + layer_index
                name = slot_layer_name(model_prefix, slot)
                self.model.polar_slots[str(slot)] = make_slot_attention(base, name, vllm_config)
                self._slot_names[layer_index, pass_index] = name
        self.polar_compiled_layers = (
            CompiledLayers(self.model.layers, vllm_config) if runs_compiled(vllm_config) else None
        )

    def polar_slot_name(self, layer_index: int, pass_index: int) -> str:
        """The layer name of the KV slot of pass ``pass_index`` of layer ``layer_index``."""
        try:
            return self._slot_names[layer_index, pass_index]
        except KeyError:
            raise ValueError(
                f"layer {layer_index} has no KV slot for pass {pass_index + 1} "
                f"(loop_layers / max_passes settings)"
            ) from None

    def polar_layer_call(
        self,
        index: int,
        positions: torch.Tensor,
        hidden_states: torch.Tensor,
        residual: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder layer ``index`` on these rows: its compiled code, or the layer itself."""
        if self.polar_compiled_layers is None:
            return self.model.layers[index](positions, hidden_states, residual)
        return self.polar_compiled_layers.call(index, positions, hidden_states, residual)

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
        step_runner = _StepRunner(self, positions, plan)
        # Compiled layers have no first-layer path (residual None); a zero residual gives
        # the same values (see run_plan).
        residual = None if self.polar_compiled_layers is None else torch.zeros_like(hidden_states)
        with routing_to(step_runner.attend):
            hidden_states, residual = run_plan(plan, hidden_states, residual, step_runner)
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
    if vllm_config.use_v2_model_runner:
        problems.append("the V2 model runner (set VLLM_USE_V2_MODEL_RUNNER=0)")
    if problems:
        raise NotImplementedError(f"PoLar does not support {', '.join(problems)} yet")
    refusal = compiled_path_refusal(vllm_config)
    if refusal is not None:
        raise NotImplementedError(refusal)
