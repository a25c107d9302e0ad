"""Per-step work that grows with the number of KV-cache groups, made cheap on CPU (vLLM 0.32).

PoLar gives a model one KV-cache group per ``kv_group_layers`` layers of a pass
(:mod:`.kv_cache_groups`: 60 groups for SmolLM2's 30 layers at the default of 1), and vLLM's
model runner does some work for every group at every step. On the CPU backend two of those
costs are mostly fixed Python overhead, which :func:`polar_cpu_initialize_kv_cache` cuts for
PoLar engines on CPU only (stock engines are left exactly as they are):

* attention metadata: vLLM builds each group's metadata anew unless the backend's builder can
  put another group's block table and slot mapping into a build of a group with the same
  KV-cache spec (``supports_update_block_table``, as FlashAttention's builder does). A CPU
  build differs across such groups only in those two fields: its scheduler metadata depends
  on the batch's query and sequence lengths and the spec. So PoLar's CPU builders get that
  update (:func:`_replace_block_table`), and a step builds once per spec instead of per group.
  When every group has the same spec, the runner's per-group loop itself (a copy of the common
  metadata, a spec hash and checks per group) is cut too (:func:`_build_once_for_all_groups`):
  vLLM builds group 0's metadata, and each other group gets a copy with its own block table
  and slot mapping, which is what the loop computes;
* slot mappings: vLLM runs its slot-mapping kernel once per group through a generic kernel
  launcher, which binds every argument by name on every call. On CPU that kernel is one custom
  op (vLLM's CPU override of the Triton kernel), which PoLar's block tables call directly
  (:func:`_direct_slot_mappings`): the same op on the same tensors.
"""

from __future__ import annotations

import copy
import functools
import types
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["polar_cpu_initialize_kv_cache"]


def _replace_block_table(
    metadata: Any, block_table: torch.Tensor, slot_mapping: torch.Tensor
) -> Any:
    """``CPUAttentionMetadata`` of another group of the same spec: ``metadata`` with that
    group's block table and slot mapping (a shallow copy: every other field is shared)."""
    metadata = copy.copy(metadata)
    metadata.block_table = block_table
    metadata.slot_mapping = slot_mapping
    return metadata


def _share_cpu_builds(runner: Any) -> None:
    """Let the runner's CPU attention builders (decoder attention only: an encoder-only build
    makes its own block table) reuse one build per KV-cache spec."""
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionMetadataBuilder

    for groups in runner.attn_groups:
        for attention_group in groups:
            for builder in attention_group.metadata_builders:
                if (
                    isinstance(builder, CPUAttentionMetadataBuilder)
                    and not builder.is_encoder_only_attention
                    and not builder.is_cross_attention
                ):
                    builder.update_block_table = _replace_block_table
                    builder.supports_update_block_table = True


def _direct_slot_mappings(
    multi_group_table: Any, num_reqs: int, query_start_loc: torch.Tensor, positions: torch.Tensor
) -> None:
    """Every group's slot mapping, by the op vLLM's CPU slot-mapping kernel runs."""
    del num_reqs  # the op reads the request count off query_start_loc, as vLLM's CPU kernel
    for table in multi_group_table.block_tables:
        torch.ops._C.compute_slot_mapping_kernel_impl(
            query_start_loc,
            positions,
            table.block_table.gpu,
            table.slot_mapping.gpu,
            table.block_size,
        )


def _call_op_directly(runner: Any) -> None:
    """Give the runner's block tables :func:`_direct_slot_mappings` where vLLM itself would run
    the same op: CPU, no Triton, no context parallelism, token-to-slot mappings in every group."""
    from vllm.triton_utils import HAS_TRITON
    from vllm.v1.worker.block_table import SlotMappingMode

    multi_group_table = runner.input_batch.block_table
    tables = multi_group_table.block_tables
    if HAS_TRITON:
        return
    if not all(
        table.slot_mapping_mode == SlotMappingMode.TOKEN_TO_KV_SLOT
        and table.dcp_world_size == 1
        and table.pcp_world_size == 1
        for table in tables
    ):
        return
    multi_group_table.compute_slot_mapping = types.MethodType(
        _direct_slot_mappings, multi_group_table
    )


def _build_once_for_all_groups(runner: Any) -> None:
    """Give ``runner`` a ``_build_attention_metadata`` that runs vLLM's build for group 0 only
    and copies its metadata to the other groups with their block tables and slot mappings;
    where any group differs in spec or builder, or a step uses micro-batches, speculative
    decoding or graph capture, vLLM's build runs as it is."""
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionMetadataBuilder
    from vllm.v1.worker.gpu_model_runner import NULL_BLOCK_ID

    groups = runner.kv_cache_config.kv_cache_groups
    if (
        len({group.kv_cache_spec for group in groups}) != 1
        or any(len(attention_groups) != 1 for attention_groups in runner.attn_groups)
        or not all(
            type(builder) is CPUAttentionMetadataBuilder
            for attention_groups in runner.attn_groups
            for builder in attention_groups[0].metadata_builders
        )
        or runner.speculative_config is not None
    ):
        return

    def build(*args: Any, **kwargs: Any) -> Any:
        # vLLM's method as the class has it when called (wrappers installed later included).
        return type(runner)._build_attention_metadata(runner, *args, **kwargs)

    first_config = copy.copy(runner.kv_cache_config)
    first_config.kv_cache_groups = groups[:1]
    layer_names = [group.layer_names for group in groups]

    def build_once(
        num_tokens: int,
        num_reqs: int,
        max_query_len: int,
        num_tokens_padded: int | None = None,
        num_reqs_padded: int | None = None,
        ubatch_slices: Any = None,
        **kwargs: Any,
    ) -> Any:
        arguments = (num_tokens, num_reqs, max_query_len, num_tokens_padded, num_reqs_padded)
        if (
            ubatch_slices is not None
            or kwargs.get("for_cudagraph_capture")
            or kwargs.get("use_spec_decode")
            or kwargs.get("slot_mappings") is None
        ):
            return build(*arguments, ubatch_slices, **kwargs)
        config, attention_groups = runner.kv_cache_config, runner.attn_groups
        runner.kv_cache_config, runner.attn_groups = first_config, attention_groups[:1]
        try:
            metadata, spec_metadata = build(*arguments, None, **kwargs)
        finally:
            runner.kv_cache_config, runner.attn_groups = config, attention_groups
        first = metadata[layer_names[0][0]]
        rows = num_reqs_padded or num_reqs
        slot_mappings = kwargs["slot_mappings"]
        tables = runner.input_batch.block_table.block_tables
        for group in range(1, len(layer_names)):
            block_table = tables[group].get_device_tensor(rows)
            if rows > num_reqs:
                block_table[num_reqs:rows].fill_(NULL_BLOCK_ID)  # as vLLM pads a table
            group_metadata = _replace_block_table(first, block_table, slot_mappings[group])
            for name in layer_names[group]:
                metadata[name] = group_metadata
        return metadata, spec_metadata

    runner._build_attention_metadata = build_once


def polar_cpu_initialize_kv_cache(initialize_kv_cache: Callable[..., None]) -> Callable[..., None]:
    """Wrap ``GPUModelRunner.initialize_kv_cache`` (which the CPU runner extends): for a PoLar
    model with more than one KV-cache group on CPU, cut the per-group costs of every later step
    (see the module doc)."""

    @functools.wraps(initialize_kv_cache)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        initialize_kv_cache(self, *args, **kwargs)
        polar = hasattr(self.get_model(), "polar_batch")
        if polar and self.device.type == "cpu" and len(self.attn_groups) > 1:
            _share_cpu_builds(self)
            _call_op_directly(self)
            _build_once_for_all_groups(self)

    return wrapper
