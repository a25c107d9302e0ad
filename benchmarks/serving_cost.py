"""What a served request costs in layer-tokens: the model behind the payoff benchmarks' ideal
requests/s ratios.

On the payoff workloads (short prompts, at most a few dozen answer tokens, batches of hundreds
of requests) the decoder layers' GEMMs dominate and every token costs about the same per layer,
prefill or decode. A request whose program runs ``L`` layers, with ``P`` prompt tokens and
``G`` generated tokens, then costs

    L * (P + G - 1) + H * G

layer-tokens: every prompt token and every generated token but the last passes through the
``L`` layers, and the LM head runs once per generated token. ``H`` is the head's weights over
one decoder layer's: Qwen2.5-Coder-0.5B's 151,936 x 896 head weighs as much as 9.1 of its
layers, so for short answers the head is a large part of the cost and skipped layers save
less than ``L / D``. Attention over the cached sequence (at most a few hundred tokens here) and
per-step costs are left out, so the measured ratio over this model's ideal ratio is the share
of the ideal that the engine keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from layer_call_cost import layer_weight_bytes


def head_layers(hf_config: Any) -> float:
    """The LM head's weights over one decoder layer's, from a Hugging Face model config."""
    return hf_config.vocab_size * hf_config.hidden_size / layer_weight_bytes(hf_config, 1)


def request_cost(layers: int, prompt_tokens: int, generated_tokens: int, head: float) -> float:
    """Layer-tokens of one request (see the module docstring)."""
    if generated_tokens < 1:
        raise ValueError(f"a served request generates at least one token, got {generated_tokens}")
    return layers * (prompt_tokens + generated_tokens - 1) + head * generated_tokens


def workload_cost(
    layers: Sequence[int],
    prompt_tokens: Sequence[int],
    generated_tokens: Sequence[int],
    head: float,
) -> float:
    """Layer-tokens of a workload: the sum of its requests' :func:`request_cost`."""
    return sum(
        request_cost(n, p, g, head)
        for n, p, g in zip(layers, prompt_tokens, generated_tokens, strict=True)
    )
