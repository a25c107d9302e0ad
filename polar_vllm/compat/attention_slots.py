"""KV-cache slots for extra passes of a layer, and running a layer on a sub-batch (vLLM 0.32).

vLLM gives every ``Attention`` object its own KV cache, keyed by the object's layer name, and
the attention op looks up its metadata, slot mapping and cache by that name in the forward
context. So an extra pass of a layer is a second ``Attention`` object (registered under its own
name, no weights of its own) behind the layer's QKV/O projections, and running pass ``p`` of a
layer means pointing the layer's ``Attention`` at slot ``p``'s name for the call. One call of a
layer may also run different passes for different rows (:func:`split_attention`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["attention_slot", "forward_context_entries", "make_slot_attention", "split_attention"]


def make_slot_attention(base: nn.Module, prefix: str, vllm_config: Any) -> nn.Module:
    """A new ``Attention`` configured like ``base`` that owns the KV cache named ``prefix``."""
    from vllm.model_executor.layers.attention import Attention

    if not isinstance(base, Attention):
        raise TypeError(f"PoLar KV slots need a vLLM Attention layer, found {type(base).__name__}")
    if getattr(base.impl, "alibi_slopes", None) is not None:
        raise NotImplementedError("PoLar KV slots do not support ALiBi attention")
    return Attention(
        base.num_heads,
        base.head_size,
        base.impl.scale,
        num_kv_heads=base.num_kv_heads,
        cache_config=vllm_config.cache_config,
        quant_config=vllm_config.quant_config,
        per_layer_sliding_window=base.sliding_window,
        prefix=prefix,
        attn_type=base.attn_type,
        head_size_v=base.head_size_v,
    )


@contextmanager
def attention_slot(attention: nn.Module, slot_name: str) -> Iterator[None]:
    """Within the block, ``attention`` reads and writes the KV slot named ``slot_name``."""
    own_name = attention.layer_name
    if slot_name == own_name:
        yield
        return
    attention.layer_name = slot_name
    try:
        yield
    finally:
        attention.layer_name = own_name


@contextmanager
def split_attention(attention: nn.Module, blocks: Sequence[tuple[str, int]]) -> Iterator[None]:
    """Within the block, ``attention`` runs consecutive blocks of rows on different KV slots.

    ``blocks`` lists ``(slot name, rows)`` in row order. With one block this is
    :func:`attention_slot`. With several, a call of ``attention`` runs each block of its query,
    key and value rows as a call of its own against that block's slot (which finds its own
    metadata and slot mapping in the forward context) and concatenates the outputs, so the
    layer's projections and MLP run once for all rows.
    """
    if len(blocks) == 1:
        with attention_slot(attention, blocks[0][0]):
            yield
        return
    forward = type(attention).forward

    def split_forward(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        output_shape: torch.Size | None = None,
        output_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        if output_shape is not None:
            raise NotImplementedError("PoLar cannot split attention with an explicit output shape")
        outputs = []
        start = 0
        for slot_name, rows in blocks:
            end = start + rows
            with attention_slot(attention, slot_name):
                block = (query[start:end], key[start:end], value[start:end])
                outputs.append(forward(attention, *block, output_dtype=output_dtype))
            start = end
        return torch.cat(outputs)

    attention.forward = split_forward
    try:
        yield
    finally:
        del attention.forward


@contextmanager
def forward_context_entries(
    layer_name: str, attn_metadata: Any, slot_mapping: torch.Tensor
) -> Iterator[None]:
    """Within the block, layer ``layer_name`` sees ``attn_metadata`` and ``slot_mapping``."""
    from vllm.forward_context import get_forward_context

    context = get_forward_context()
    metadata_by_layer, slots_by_layer = context.attn_metadata, context.slot_mapping
    if not isinstance(metadata_by_layer, dict) or not isinstance(slots_by_layer, dict):
        raise NotImplementedError("PoLar sub-batches need per-layer attention metadata dicts")
    saved = metadata_by_layer[layer_name], slots_by_layer[layer_name]
    metadata_by_layer[layer_name], slots_by_layer[layer_name] = attn_metadata, slot_mapping
    try:
        yield
    finally:
        metadata_by_layer[layer_name], slots_by_layer[layer_name] = saved
