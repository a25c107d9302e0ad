"""KV-cache slots for extra passes of a layer, and running a layer on a sub-batch (vLLM 0.32).

vLLM gives every ``Attention`` object its own KV cache, keyed by the object's layer name, and
the attention op looks up its metadata, slot mapping and cache by that name in the forward
context. So an extra pass of a layer is a second ``Attention`` object (registered under its own
name, no weights of its own) behind the layer's QKV/O projections, and running pass ``p`` of a
layer means pointing the layer's ``Attention`` at slot ``p``'s name for the call. One call of a
layer may also run different passes for different rows (:func:`call_on_slots`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import nn

_T = TypeVar("_T")

__all__ = [
    "ContextTables",
    "SlotBlock",
    "attention_slot",
    "call_on_slots",
    "forward_context_tables",
    "make_slot_attention",
    "slot_layer_name",
    "slot_of_layer_name",
]

_SLOT_MODULE = "polar_slots"
"""The decoder's ``ModuleDict`` of extra-pass ``Attention`` objects, keyed by slot number."""


def slot_layer_name(model_prefix: str, slot: int) -> str:
    """The layer name of extra-pass KV slot ``slot`` (``pass * D + layer``)."""
    return f"{model_prefix}.{_SLOT_MODULE}.{slot}"


def slot_of_layer_name(layer_name: str, depth: int) -> tuple[int, int]:
    """``(layer, pass index)`` of a PoLar model's attention layer name: an extra-pass slot
    (:func:`slot_layer_name`) or a decoder layer's own attention (pass index 0)."""
    from vllm.model_executor.models.utils import extract_layer_index

    parts = layer_name.split(".")
    if len(parts) >= 2 and parts[-2] == _SLOT_MODULE:
        slot = int(parts[-1])
        return slot % depth, slot // depth
    return extract_layer_index(layer_name), 0


def make_slot_attention(base: nn.Module, prefix: str, vllm_config: Any) -> nn.Module:
    """A new ``Attention`` configured like ``base`` that owns the KV cache named ``prefix``."""
    from vllm.model_executor.layers.attention import Attention

    if not isinstance(base, Attention):
        raise TypeError(f"PoLar KV slots need a vLLM Attention layer, found {type(base).__name__}")
    if getattr(base.impl, "alibi_slopes", None) is not None:
        raise NotImplementedError("PoLar KV slots do not support ALiBi attention")
    if getattr(base, "kv_sharing_target_layer_name", None) is not None:
        raise NotImplementedError("PoLar KV slots do not support layers that share a KV cache")
    slot = Attention(
        base.num_heads,
        base.head_size,
        base.impl.scale,
        num_kv_heads=base.num_kv_heads,
        cache_config=vllm_config.cache_config,
        quant_config=vllm_config.quant_config,
        # Backends store "no soft cap" as 0 or None.
        logits_soft_cap=getattr(base.impl, "logits_soft_cap", None) or None,
        per_layer_sliding_window=base.sliding_window,
        prefix=prefix,
        attn_type=base.attn_type,
        head_size_v=base.head_size_v,
    )
    # A sliding-window layer's extra passes attend through the same window.
    if slot.sliding_window != base.sliding_window:
        raise RuntimeError(
            f"PoLar KV slot {prefix} got sliding window {slot.sliding_window}, its layer "
            f"{base.layer_name} has {base.sliding_window}"
        )
    return slot


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


SlotBlock = tuple[str, Any, torch.Tensor, int]
"""``(slot name, attention metadata, slot mapping, rows)``: one KV slot's block of a step's rows."""

ContextTables = tuple[dict[str, Any], dict[str, torch.Tensor]]
"""The forward context's attention metadata and slot mappings, by layer name."""


def forward_context_tables() -> ContextTables:
    """The current forward's per-layer attention metadata and slot mapping dicts."""
    from vllm.forward_context import get_forward_context

    context = get_forward_context()
    metadata_by_layer, slots_by_layer = context.attn_metadata, context.slot_mapping
    if not isinstance(metadata_by_layer, dict) or not isinstance(slots_by_layer, dict):
        raise NotImplementedError("PoLar sub-batches need per-layer attention metadata dicts")
    return metadata_by_layer, slots_by_layer


def call_on_slots(
    attention: nn.Module,
    tables: ContextTables,
    blocks: Sequence[SlotBlock],
    call: Callable[..., _T],
    *args: Any,
) -> _T:
    """Return ``call(*args)`` with ``attention`` running consecutive blocks of rows on KV slots.

    Each block's slot sees the block's attention metadata and slot mapping in the forward
    context (``tables``) for the call, then its own again. With one block, ``attention`` simply
    reads and writes that block's slot. With several, a call of ``attention`` runs each block of
    its query, key and value rows as a call of its own against that block's slot and
    concatenates the outputs, so the layer's projections and MLP run once for all rows.
    """
    metadata_by_layer, slots_by_layer = tables
    saved = [(name, metadata_by_layer[name], slots_by_layer[name]) for name, *_ in blocks]
    for name, metadata, slot_mapping, _ in blocks:
        metadata_by_layer[name] = metadata
        slots_by_layer[name] = slot_mapping
    own_name = attention.layer_name
    split = len(blocks) > 1
    if split:
        attention.forward = _split_forward(attention, [(name, rows) for name, *_, rows in blocks])
    else:
        attention.layer_name = blocks[0][0]
    try:
        return call(*args)
    finally:
        if split:
            del attention.forward
        attention.layer_name = own_name
        for name, metadata, slot_mapping in saved:
            metadata_by_layer[name] = metadata
            slots_by_layer[name] = slot_mapping


def _split_forward(attention: nn.Module, blocks: Sequence[tuple[str, int]]) -> Callable:
    """``attention.forward`` that runs each ``(slot name, rows)`` block on its own slot."""
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

    return split_forward
