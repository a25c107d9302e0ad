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

__all__ = [
    "SUPPORTED_BACKENDS",
    "UnsupportedAttentionBackend",
    "check_attention_backend",
    "subset_attention_metadata",
]


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


def _refuse_extras(backend: str, metadata: Any, extras: Sequence[str]) -> None:
    """Fail loudly when ``metadata`` uses a feature PoLar cannot restrict to a sub-batch: one of
    the optional fields ``extras``, or a per-token (tensor) ``causal`` mask."""
    used = sorted(name for name in extras if getattr(metadata, name) is not None)
    if used or isinstance(metadata.causal, torch.Tensor):
        raise UnsupportedAttentionBackend(
            f"PoLar sub-batches do not support {backend} with {used or ['dynamic causal']}"
        )


def _device_subset_fields(metadata: Any, rows: _SubBatch) -> dict[str, Any]:
    """The fields every GPU backend's sub-batch replaces: token counts, query offsets, and the
    requests' sequence lengths and block tables (on the batch's device). ``max_seq_len`` stays
    the batch's, a valid upper bound that needs no device-to-host read."""
    device = metadata.seq_lens.device
    device_index = rows.request_index.to(device, non_blocking=True)
    return {
        "num_actual_tokens": sum(rows.query_lens),
        "max_query_len": max(rows.query_lens),
        "query_start_loc": rows.query_start_loc_on(device),
        "seq_lens": metadata.seq_lens.index_select(0, device_index),
        "block_table": metadata.block_table.index_select(0, device_index),
        "slot_mapping": rows.slot_mapping,
    }


def _subset_flash_attention(metadata: Any, rows: _SubBatch, layer: Any, dtype: torch.dtype) -> Any:
    """``FlashAttentionMetadata`` of the requests ``request_index``.

    The ahead-of-time split schedule (``scheduler_metadata``) belongs to the whole batch, so the
    sub-batch drops it and FlashAttention plans its own.
    """
    del layer, dtype
    extras = ("dcp_context_kv_lens", "mm_prefix_query_range_tensor", "rswa_prefix_lens")
    _refuse_extras("FlashAttention", metadata, extras)
    query_lens = rows.query_lens
    num_decode_reqs = sum(1 for length in query_lens if length == 1)
    return dataclasses.replace(
        metadata,
        **_device_subset_fields(metadata, rows),
        scheduler_metadata=None,
        num_decode_reqs=num_decode_reqs,
        num_prefill_reqs=len(query_lens) - num_decode_reqs,
        num_decode_tokens=num_decode_reqs,
        num_prefill_tokens=sum(query_lens) - num_decode_reqs,
    )


def _subset_triton(metadata: Any, rows: _SubBatch, layer: Any, dtype: torch.dtype) -> Any:
    """``TritonAttentionMetadata`` of the requests ``request_index``.

    The split-softmax scratch buffers are the builder's, sized for the largest decode batch
    that takes the 3D kernel, so a sub-batch (fewer requests, fewer tokens) fits them as is.
    """
    del layer, dtype
    extras = ("scheduler_metadata", "mm_prefix_range_tensor", "rswa_prefix_lens")
    _refuse_extras("Triton attention", metadata, extras)
    return dataclasses.replace(metadata, **_device_subset_fields(metadata, rows))


_Subsetter = Callable[[Any, _SubBatch, Any, torch.dtype], Any]

SUPPORTED_BACKENDS: dict[str, tuple[str, _Subsetter]] = {
    "CPU_ATTN": ("CPUAttentionMetadata", _subset_cpu),
    "FLASH_ATTN": ("FlashAttentionMetadata", _subset_flash_attention),
    "TRITON_ATTN": ("TritonAttentionMetadata", _subset_triton),
}
"""vLLM attention backends PoLar runs mixed-program batches on: their metadata class names and
the function that restricts that metadata to a sub-batch."""

_SUBSETTERS: dict[str, _Subsetter] = dict(SUPPORTED_BACKENDS.values())


def check_attention_backend(backend_name: str) -> None:
    """Refuse, before the engine serves a request, a backend whose metadata PoLar cannot
    restrict to a sub-batch (a mixed-program batch on it would fail mid-forward)."""
    if backend_name not in SUPPORTED_BACKENDS:
        raise UnsupportedAttentionBackend(
            f"PoLar cannot run mixed-program batches on the {backend_name} attention backend; "
            f"supported: {sorted(SUPPORTED_BACKENDS)}. Choose one with attention_backend= "
            f"(vllm serve --attention-backend); FLASH_ATTN needs float16 or bfloat16"
        )


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
