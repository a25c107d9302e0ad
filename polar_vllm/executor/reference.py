"""Reference executor: run a layer program on an HF transformers decoder by
recomputing the whole sequence at every step (greedy, no KV cache).

It is the ground truth the vLLM execution is tested against: with no cache there
is no question of which pass wrote which key/value, so the result is exactly
"the program applied to the sequence". It runs the decoder layers of the transformers models
of every PoLar family (Llama, Mistral, Qwen2, Qwen3, Gemma 3), sliding windows included."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

from polar_vllm.program import Program, validate_program


def _decoder(model: torch.nn.Module) -> torch.nn.Module:
    decoder = getattr(model, "model", None)
    if decoder is None or not hasattr(decoder, "layers"):
        raise TypeError(f"{type(model).__name__} has no .model.layers decoder stack")
    return decoder


def layer_types(config: Any) -> list[str]:
    """Each decoder layer's attention type, ``"full_attention"`` or ``"sliding_attention"``.

    From the config's ``layer_types`` (Gemma 3, Qwen2/3 with sliding windows), else one type for
    all layers: sliding when the config has a ``sliding_window`` (Mistral), else full."""
    depth = config.num_hidden_layers
    types = getattr(config, "layer_types", None)
    if types:
        return list(types[:depth])
    uniform = "sliding_attention" if getattr(config, "sliding_window", None) else "full_attention"
    return [uniform] * depth


def _causal_mask(
    seq_len: int, window: int | None, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Additive ``[1, 1, T, T]`` mask: position ``q`` sees ``k <= q`` (and ``q - k < window``)."""
    query = torch.arange(seq_len, device=device)[:, None]
    key = torch.arange(seq_len, device=device)[None, :]
    allowed = key <= query
    if window is not None:
        allowed &= query - key < window
    mask = torch.zeros(seq_len, seq_len, dtype=dtype, device=device)
    return mask.masked_fill(~allowed, float("-inf"))[None, None]


def _position_embeddings(
    decoder: torch.nn.Module, hidden: torch.Tensor, positions: torch.Tensor, types: set[str]
) -> dict[str, Any]:
    """The rotary embeddings of each layer type (Gemma 3's differ by type)."""
    rotary = decoder.rotary_emb
    if "layer_type" in inspect.signature(rotary.forward).parameters:
        return {kind: rotary(hidden, positions, kind) for kind in types}
    shared = rotary(hidden, positions)
    return dict.fromkeys(types, shared)


@torch.no_grad()
def program_logits(
    model: torch.nn.Module, input_ids: torch.Tensor, program: Program
) -> torch.Tensor:
    """Logits of every position of ``input_ids`` (shape [1, T]) under ``program``.

    Each layer gets its attention type's mask (a sliding-window layer sees only the last
    ``sliding_window`` positions) and rotary embeddings; the embedding (with any family
    scaling), final norm, head and final logit soft cap are the model's own."""
    decoder = _decoder(model)
    config = model.config.get_text_config()
    seq_len = input_ids.shape[1]
    positions = torch.arange(seq_len, device=input_ids.device).unsqueeze(0)
    hidden = decoder.embed_tokens(input_ids)
    types = layer_types(config)
    position_embeddings = _position_embeddings(decoder, hidden, positions, set(types))
    masks = {
        kind: _causal_mask(
            seq_len,
            config.sliding_window if kind == "sliding_attention" else None,
            hidden.dtype,
            hidden.device,
        )
        for kind in set(types)
    }
    for layer_index in program:
        kind = types[layer_index]
        output = decoder.layers[layer_index](
            hidden,
            attention_mask=masks[kind],
            position_ids=positions,
            position_embeddings=position_embeddings[kind],
        )
        hidden = output[0] if isinstance(output, tuple) else output
    hidden = decoder.norm(hidden)
    logits = model.lm_head(hidden)
    soft_cap = getattr(config, "final_logit_softcapping", None)
    if soft_cap is not None:
        logits = torch.tanh(logits / soft_cap) * soft_cap
    return logits


def _checked_program(model: torch.nn.Module, program: Sequence[int], max_passes: int) -> Program:
    """``program`` validated against the depth of ``model``'s decoder stack."""
    return validate_program(program, len(_decoder(model).layers), max_passes)


@torch.no_grad()
def generate_greedy(
    model: torch.nn.Module,
    prompt_ids: Sequence[int],
    program: Sequence[int],
    max_new_tokens: int,
    eos_token_id: int | None = None,
    max_passes: int = 2,
) -> list[int]:
    """Greedy tokens generated after ``prompt_ids`` with every step running ``program``."""
    checked = _checked_program(model, program, max_passes)
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids)], device=device)
    generated: list[int] = []
    for _ in range(max_new_tokens):
        next_token = int(program_logits(model, ids, checked)[0, -1].argmax())
        generated.append(next_token)
        if eos_token_id is not None and next_token == eos_token_id:
            break
        ids = torch.cat([ids, torch.tensor([[next_token]], device=device)], dim=1)
    return generated


@torch.no_grad()
def greedy_choices(
    model: torch.nn.Module,
    prompt_ids: Sequence[int],
    generated_ids: Sequence[int],
    program: Sequence[int],
    max_passes: int = 2,
) -> list[int]:
    """The greedy token ``program`` chooses at each position of ``generated_ids``, given
    ``prompt_ids`` and the generated tokens before that position.

    One recompute of the whole sequence instead of one per token: the reference is causal,
    so position ``t``'s logits see only the tokens before it. Where every choice equals its
    generated token (and the tokens end at EOS or at the length asked for),
    :func:`generate_greedy` would have generated exactly ``generated_ids``."""
    if not generated_ids:
        return []
    checked = _checked_program(model, program, max_passes)
    device = next(model.parameters()).device
    # The last generated token is an output only: no position after it is checked.
    ids = torch.tensor([[*prompt_ids, *generated_ids[:-1]]], device=device)
    logits = program_logits(model, ids, checked)[0, len(prompt_ids) - 1 :]
    return logits.argmax(dim=-1).tolist()
