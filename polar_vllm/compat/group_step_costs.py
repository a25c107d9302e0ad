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
  update (:func:`_replace_block_table`), and a step builds once per spec instead of per group;
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

    return wrapper
