"""The static skip baseline (ShortGPT style): one fixed program that drops the least useful layers.

A layer's importance is its *block influence*, ``1 - cos(input, output)`` of its hidden states,
averaged over the tokens of calibration prompts (then over prompts). The ``k`` layers with the
lowest importance are dropped from every request's program.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from polar_vllm.program import Program

__all__ = ["layer_importance", "static_skip_program"]


@torch.no_grad()
def layer_importance(model: Any, tokenizer: Any, prompts: Sequence[str]) -> list[float]:
    """Block influence of every decoder layer of the HF causal LM ``model`` on ``prompts``."""
    if not prompts:
        raise ValueError("layer_importance needs at least one calibration prompt")
    layers = model.model.layers
    totals = torch.zeros(len(layers), dtype=torch.float64)
    current = torch.zeros(len(layers), dtype=torch.float64)

    def make_hook(index: int) -> Any:
        def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            hidden_in = args[0] if args else kwargs["hidden_states"]
            hidden_out = output[0] if isinstance(output, tuple) else output
            cosine = F.cosine_similarity(hidden_in.double(), hidden_out.double(), dim=-1)
            current[index] = 1.0 - cosine.mean()

        return hook

    handles = [
        layer.register_forward_hook(make_hook(i), with_kwargs=True)
        for i, layer in enumerate(layers)
    ]
    try:
        device = next(model.parameters()).device
        for prompt in tqdm(prompts, desc="layer importance", unit="prompt", leave=False):
            ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
            model(input_ids=ids.to(device))
            totals += current
    finally:
        for handle in handles:
            handle.remove()
    return (totals / len(prompts)).tolist()


def static_skip_program(importance: Sequence[float], k: int) -> Program:
    """The program running every layer except the ``k`` least important (ties: lower index)."""
    depth = len(importance)
    if not 0 <= k < depth:
        raise ValueError(f"static skip must drop 0..{depth - 1} layers, got {k}")
    ranked = sorted(range(depth), key=lambda i: (importance[i], i))
    dropped = set(ranked[:k])
    return tuple(i for i in range(depth) if i not in dropped)
