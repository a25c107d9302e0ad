"""KV-cache slots for extra passes of a layer, and running a layer on a sub-batch (vLLM 0.32).

vLLM gives every ``Attention`` object its own KV cache, keyed by the object's layer name, and
the attention op looks up its metadata, slot mapping and cache by that name in the forward
context. So an extra pass of a layer is a second ``Attention`` object (registered under its own
name, no weights of its own) behind the layer's QKV/O projections, and running pass ``p`` of a
layer means pointing the layer's ``Attention`` at slot ``p``'s name for the call.

Which slot, and which requests' rows, a layer call attends over changes with every schedule
step, so a PoLar decoder layer's own ``Attention`` is *routed* (:func:`route_attention`): its
forward hands query, key and value to the attention call of the running forward
(:func:`routing_to`), which runs vLLM's attention on the right slot and sub-batch; one call of
a layer may run different passes for different rows (:func:`attend_on_slots`). Inside a
compiled layer the routed call is one opaque custom op (``polar::slot_attention``), so the
compiled code never holds a slot name or a batch: the layer's norms, projections, rotary
embedding and MLP compile around it, as vLLM's piecewise mode compiles around its attention op.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = [
    "AttentionCall",
    "ContextTables",
    "SlotBlock",
    "attend_on_slots",
    "forward_context_tables",
    "make_slot_attention",
    "route_attention",
    "routing_to",
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


SlotBlock = tuple[str, Any, torch.Tensor, int]
"""``(slot name, attention metadata, slot mapping, rows)``: one KV slot's block of a step's rows."""

ContextTables = tuple[dict[str, Any], dict[str, torch.Tensor]]
"""The forward context's attention metadata and slot mappings, by layer name."""

AttentionCall = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``attend(layer, query, key, value) -> output``: the attention of decoder layer ``layer`` in the
current schedule step, on the KV slots of that step's rows."""

_ACTIVE_CALLS: list[AttentionCall] = []
"""The attention call of the forward running now (innermost last): see :func:`routing_to`."""


@contextmanager
def routing_to(attend: AttentionCall) -> Iterator[None]:
    """Within the block, routed attention layers (:func:`route_attention`) call ``attend``."""
    _ACTIVE_CALLS.append(attend)
    try:
        yield
    finally:
        _ACTIVE_CALLS.pop()


def _slot_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, layer: int, width: int
) -> torch.Tensor:
    """Attention of decoder layer ``layer`` on the KV slots of the current step's rows.

    Opaque to the compiler: which slots and which requests a call attends over changes with
    every step and batch, so it is looked up when the op runs, never traced."""
    del width  # the fake implementation's output width
    return _ACTIVE_CALLS[-1](layer, query, key, value)


def _slot_attention_fake(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, layer: int, width: int
) -> torch.Tensor:
    del key, value, layer
    return query.new_empty((query.shape[0], width))


# The op lives as long as its library object: a module global.
_POLAR_LIBRARY = torch.library.Library("polar", "FRAGMENT")


def _register_slot_attention() -> None:
    """Register ``torch.ops.polar.slot_attention`` as vLLM registers its attention op: straight
    into the dispatcher for the platform's device, which costs less per call than
    ``torch.library.custom_op`` (one call per layer and forward)."""
    from vllm.utils.torch_utils import direct_register_custom_op

    direct_register_custom_op(
        "slot_attention",
        _slot_attention,
        mutates_args=[],
        fake_impl=_slot_attention_fake,
        target_lib=_POLAR_LIBRARY,
    )


_register_slot_attention()


class _RoutedAttention:
    """Mixed in before a vLLM ``Attention`` class: calling the layer runs the active attention
    call (:func:`routing_to`) for decoder layer ``polar_layer``, which picks the KV slot and
    sub-batch. The call is one opaque op inside a compiled layer and a plain call in eager mode.
    """

    polar_layer: int

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        output_shape: torch.Size | None = None,
        output_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        if output_shape is not None or output_dtype is not None:
            raise NotImplementedError("PoLar routes attention with the default output only")
        if not torch.compiler.is_compiling():
            return _ACTIVE_CALLS[-1](self.polar_layer, query, key, value)
        width = self.num_heads * self.head_size_v  # type: ignore[attr-defined]
        return torch.ops.polar.slot_attention(query, key, value, self.polar_layer, width)

    def slot_forward(
        self, slot_name: str, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> torch.Tensor:
        """vLLM's own attention of these rows, reading and writing the KV slot ``slot_name``."""
        own_name = self.layer_name  # type: ignore[attr-defined]
        self.layer_name = slot_name
        try:
            return super().forward(query, key, value)  # type: ignore[misc]
        finally:
            self.layer_name = own_name


_ROUTED_CLASSES: dict[type, type] = {}


def route_attention(attention: nn.Module, layer: int) -> None:
    """Make ``attention`` (decoder layer ``layer``'s own ``Attention``) call the active attention
    call instead of attending by itself: its class becomes a subclass of its own with the
    routing forward (everything else, its KV cache binding and weights included, unchanged)."""
    cls = type(attention)
    if not issubclass(cls, _RoutedAttention):
        if cls not in _ROUTED_CLASSES:
            _ROUTED_CLASSES[cls] = type(f"PolarRouted{cls.__name__}", (_RoutedAttention, cls), {})
        attention.__class__ = _ROUTED_CLASSES[cls]
    attention.polar_layer = layer


def forward_context_tables() -> ContextTables:
    """The current forward's per-layer attention metadata and slot mapping dicts."""
    from vllm.forward_context import get_forward_context

    context = get_forward_context()
    metadata_by_layer, slots_by_layer = context.attn_metadata, context.slot_mapping
    if not isinstance(metadata_by_layer, dict) or not isinstance(slots_by_layer, dict):
        raise NotImplementedError("PoLar sub-batches need per-layer attention metadata dicts")
    return metadata_by_layer, slots_by_layer


def attend_on_slots(
    attention: nn.Module,
    tables: ContextTables,
    blocks: Sequence[SlotBlock],
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
) -> torch.Tensor:
    """Attention of consecutive blocks of rows, each on its own KV slot and sub-batch.

    Each block's slot sees the block's attention metadata and slot mapping in the forward
    context (``tables``) for its call, then its own again; the outputs are concatenated."""
    metadata_by_layer, slots_by_layer = tables
    outputs = []
    start = 0
    for name, metadata, slot_mapping, rows in blocks:
        end = start + rows
        saved = metadata_by_layer[name], slots_by_layer[name]
        metadata_by_layer[name], slots_by_layer[name] = metadata, slot_mapping
        try:
            outputs.append(
                attention.slot_forward(name, query[start:end], key[start:end], value[start:end])
            )
        finally:
            metadata_by_layer[name], slots_by_layer[name] = saved
        start = end
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)
