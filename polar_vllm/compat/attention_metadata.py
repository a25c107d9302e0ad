"""Restrict a batch's attention metadata to a subset of its requests (vLLM 0.32).

A PoLar schedule step runs one (layer, pass) KV slot on the tokens of the requests whose
programs contain it. Their attention must see exactly those requests: the query offsets,
sequence lengths and block tables of the subset, in batch order. The layout of attention
metadata is backend specific, so there is one function per backend behind
:func:`subset_attention_metadata`, and an unsupported backend fails loudly.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["UnsupportedAttentionBackend", "subset_attention_metadata"]


class UnsupportedAttentionBackend(NotImplementedError):
    """PoLar cannot restrict this backend's metadata to a sub-batch."""


@dataclasses.dataclass(frozen=True)
class _SubBatch:
    request_index: torch.Tensor
    query_lens: Sequence[int]
    query_start_loc: torch.Tensor  # int32, on the CPU
    slot_mapping: torch.Tensor

    def query_start_loc_on(self, device: torch.device) -> torch.Tensor:
        return self.query_start_loc.to(device, non_blocking=True)


def _query_offsets(query_lens: Sequence[int]) -> torch.Tensor:
    """``[0, cumsum(query_lens)...]`` as an int32 CPU tensor."""
    return torch.tensor([0, *itertools.accumulate(query_lens)], dtype=torch.int32)


def _subset_cpu(metadata: Any, rows: _SubBatch, layer: Any, dtype: torch.dtype) -> Any:
    """``CPUAttentionMetadata`` of the requests ``request_index`` (CPU tensors throughout)."""
    from vllm import _custom_ops as ops
    from vllm import envs

    if metadata.dynamic_causal is not None or metadata.encoder_cache is not None:
        raise UnsupportedAttentionBackend(
            "PoLar sub-batches support causal decoder attention only on the CPU backend"
        )
    query_lens, request_index = rows.query_lens, rows.request_index
    seq_lens = metadata.seq_lens.index_select(0, request_index)
    query_start_loc = rows.query_start_loc_on(metadata.query_start_loc.device)
    impl = layer.impl
    scheduler_metadata = ops.cpu_attn_get_scheduler_metadata(
        num_reqs=len(query_lens),
        num_heads=impl.num_heads,
        num_kv_heads=impl.num_kv_heads,
        head_dim=impl.head_size,
        seq_lens=seq_lens,
        dtype=dtype,
        query_start_loc=query_start_loc,
        causal=metadata.causal,
        sliding_window_size=impl.sliding_window,
        isa=layer.isa,
        enable_kv_split=envs.VLLM_CPU_ATTN_SPLIT_KV,
        dynamic_causal=None,
        kv_cache_dtype=impl.kv_cache_dtype,
    )
    return dataclasses.replace(
        metadata,
        num_actual_tokens=sum(query_lens),
        max_query_len=max(query_lens),
        query_start_loc=query_start_loc,
        max_seq_len=int(seq_lens.max()),
        seq_lens=seq_lens,
        block_table=metadata.block_table.index_select(0, request_index),
        slot_mapping=rows.slot_mapping,
        scheduler_metadata=scheduler_metadata,
        use_sdpa_prefill=False,
        num_decode_tokens=0,
        sdpa_attn_masks=None,
        sdpa_start_loc=None,
    )


def _subset_flash_attention(metadata: Any, rows: _SubBatch, layer: Any, dtype: torch.dtype) -> Any:
    """``FlashAttentionMetadata`` of the requests ``request_index``.

    The ahead-of-time split schedule (``scheduler_metadata``) belongs to the whole batch, so the
    sub-batch drops it and FlashAttention plans its own; ``max_seq_len`` stays the batch's, a
    valid upper bound that needs no device-to-host read.
    """
    del layer, dtype
    query_lens = rows.query_lens
    unsupported = {
        "dcp_context_kv_lens": metadata.dcp_context_kv_lens,
        "mm_prefix_query_range_tensor": metadata.mm_prefix_query_range_tensor,
        "rswa_prefix_lens": metadata.rswa_prefix_lens,
    }
    used = sorted(name for name, value in unsupported.items() if value is not None)
    if used or isinstance(metadata.causal, torch.Tensor):
        raise UnsupportedAttentionBackend(
            f"PoLar sub-batches do not support FlashAttention with {used or ['dynamic causal']}"
        )
    device = metadata.seq_lens.device
    device_index = rows.request_index.to(device, non_blocking=True)
    num_decode_reqs = sum(1 for length in query_lens if length == 1)
    return dataclasses.replace(
        metadata,
        num_actual_tokens=sum(query_lens),
        max_query_len=max(query_lens),
        query_start_loc=rows.query_start_loc_on(device),
        seq_lens=metadata.seq_lens.index_select(0, device_index),
        block_table=metadata.block_table.index_select(0, device_index),
        slot_mapping=rows.slot_mapping,
        scheduler_metadata=None,
        num_decode_reqs=num_decode_reqs,
        num_prefill_reqs=len(query_lens) - num_decode_reqs,
        num_decode_tokens=num_decode_reqs,
        num_prefill_tokens=sum(query_lens) - num_decode_reqs,
    )


_SUBSETTERS: dict[str, Callable[[Any, _SubBatch, Any, torch.dtype], Any]] = {
    "CPUAttentionMetadata": _subset_cpu,
    "FlashAttentionMetadata": _subset_flash_attention,
}


def subset_attention_metadata(
    metadata: Any,
    request_index: torch.Tensor,
    query_lens: Sequence[int],
    slot_mapping: torch.Tensor,
    layer: Any,
    dtype: torch.dtype,
    query_start_loc: torch.Tensor | None = None,
) -> Any:
    """The attention metadata of the requests ``request_index`` of ``metadata``'s batch.

    Args:
        metadata: the whole batch's attention metadata of one KV-cache group.
        request_index: int32 CPU tensor of batch positions, increasing.
        query_lens: scheduled tokens of those requests, in the same order (all > 0).
        slot_mapping: the KV-cache slots of the sub-batch's tokens (rows of the batch's).
        layer: the ``Attention`` layer the metadata is for (backend parameters).
        dtype: the model's activation dtype.
        query_start_loc: ``[0, cumsum(query_lens)...]`` as an int32 CPU tensor, if the caller
            has it (the batch plan does); computed from ``query_lens`` otherwise.
    """
    subsetter = _SUBSETTERS.get(type(metadata).__name__)
    if subsetter is None:
        raise UnsupportedAttentionBackend(
            f"PoLar cannot run mixed-program batches with attention metadata "
            f"{type(metadata).__name__}; supported: {sorted(_SUBSETTERS)}"
        )
    if query_start_loc is None:
        query_start_loc = _query_offsets(query_lens)
    rows = _SubBatch(request_index, query_lens, query_start_loc, slot_mapping)
    return subsetter(metadata, rows, layer, dtype)
