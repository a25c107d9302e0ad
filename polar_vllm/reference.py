"""Reference executor: run a layer program on an HF transformers decoder by
recomputing the whole sequence at every step (greedy, no KV cache).

It is the ground truth the vLLM execution is tested against: with no cache there
is no question of which pass wrote which key/value, so the result is exactly
"the program applied to the sequence"."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from polar_vllm.program import Program, validate_program


def _decoder(model: torch.nn.Module) -> torch.nn.Module:
    decoder = getattr(model, "model", None)
    if decoder is None or not hasattr(decoder, "layers"):
        raise TypeError(f"{type(model).__name__} has no .model.layers decoder stack")
    return decoder


@torch.no_grad()
def program_logits(
    model: torch.nn.Module, input_ids: torch.Tensor, program: Program
) -> torch.Tensor:
    """Logits of every position of ``input_ids`` (shape [1, T]) under ``program``."""
    decoder = _decoder(model)
    seq_len = input_ids.shape[1]
    positions = torch.arange(seq_len, device=input_ids.device).unsqueeze(0)
    hidden = decoder.embed_tokens(input_ids)
    position_embeddings = decoder.rotary_emb(hidden, positions)
    causal = torch.full((seq_len, seq_len), float("-inf"), dtype=hidden.dtype, device=hidden.device)
    mask = torch.triu(causal, diagonal=1)[None, None]
    for layer_index in program:
        output = decoder.layers[layer_index](
            hidden,
            attention_mask=mask,
            position_ids=positions,
            position_embeddings=position_embeddings,
        )
        hidden = output[0] if isinstance(output, tuple) else output
    hidden = decoder.norm(hidden)
    return model.lm_head(hidden)


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
    depth = len(_decoder(model).layers)
    checked = validate_program(program, depth, max_passes)
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
