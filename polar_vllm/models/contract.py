"""What the PoLar decoder loop needs of a vLLM ``*ForCausalLM`` (the mixin's contract).

The loop reuses the model's own parts and calls them the way vLLM's Llama-style decoders do:

* ``model.model`` is the decoder, with ``layers`` (a sequence of decoder layers),
  ``embed_input_ids(input_ids)`` (the token embedding, with any family scaling) and
  ``norm(hidden_states, residual)`` (the final norm with the residual add fused in);
* a decoder layer is called as ``layer(positions, hidden_states, residual)`` and returns
  ``(hidden_states, residual)`` (``residual`` is ``None`` before the first layer), every further
  parameter having a default;
* a decoder layer's attention is ``layer.self_attn.attn``, a vLLM ``Attention`` (the layer's
  KV slot for pass 1; extra passes get their own behind the same projections).

A family whose decoder differs (fused embeddings with per-layer inputs, KV sharing across
layers, no ``self_attn.attn``) is refused at start by :func:`check_decoder_contract`, naming
what is missing.
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["DecoderContractError", "check_decoder_contract"]

_LAYER_PARAMETERS = ("positions", "hidden_states", "residual")


class DecoderContractError(NotImplementedError):
    """A model's decoder does not follow the PoLar decoder loop's contract."""


def check_decoder_contract(model: Any) -> None:
    """Raise :class:`DecoderContractError` naming every part of the contract ``model`` misses."""
    name = type(model).__name__
    decoder = getattr(model, "model", None)
    if decoder is None:
        raise DecoderContractError(f"PoLar cannot run {name}: it has no decoder at .model")
    missing = [
        f".model.{attribute}"
        for attribute in ("layers", "embed_input_ids", "norm")
        if not hasattr(decoder, attribute)
    ]
    layers = list(getattr(decoder, "layers", ()))
    if hasattr(decoder, "layers") and not layers:
        missing.append("at least one decoder layer in .model.layers")
    for index, layer in enumerate(layers):
        problems = _layer_problems(layer)
        if problems:
            missing.extend(f"layer {index} ({type(layer).__name__}): {p}" for p in problems)
            break  # one layer's problems name the family's; the rest repeat them
    if missing:
        raise DecoderContractError(
            f"PoLar cannot run {name}: its decoder does not follow the PoLar decoder contract; "
            f"missing: {'; '.join(missing)} (docs/model_families.md)"
        )


def _layer_problems(layer: Any) -> list[str]:
    """What decoder layer ``layer`` lacks of the contract."""
    problems = []
    attention = getattr(getattr(layer, "self_attn", None), "attn", None)
    if attention is None or not hasattr(attention, "layer_name"):
        problems.append("a vLLM Attention at .self_attn.attn")
    parameters = list(inspect.signature(layer.forward).parameters.values())
    names = tuple(parameter.name for parameter in parameters[: len(_LAYER_PARAMETERS)])
    if names != _LAYER_PARAMETERS:
        expected, found = ", ".join(_LAYER_PARAMETERS), ", ".join(names)
        problems.append(f"forward({expected}), found forward({found})")
    required = [
        parameter.name
        for parameter in parameters[len(_LAYER_PARAMETERS) :]
        if parameter.default is inspect.Parameter.empty
        and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]
    if required:
        problems.append(f"defaults for the extra forward parameters {required}")
    return problems
