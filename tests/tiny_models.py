"""Tiny random-weight models of the PoLar families, built with ``transformers`` (no model hub).

Each is a few small decoder layers saved as safetensors, with the bundled SmolLM2 tokenizer, so
the real vLLM engine and the transformers reference executor can both load it in seconds.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["TINY_FAMILIES", "TinyFamily", "build_tiny_model"]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
_SHAPE = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "max_position_embeddings": 512,
    "tie_word_embeddings": True,
    # Larger than the usual 0.02, so that random layers move the logits clearly and greedy
    # decoding does not hinge on near-ties.
    "initializer_range": 0.1,
}


@dataclass(frozen=True)
class TinyFamily:
    """A family's tiny model: its vLLM architecture and its config beyond the shared shape."""

    architecture: str
    config_class: str
    extra: tuple[tuple[str, Any], ...] = ()


TINY_FAMILIES: dict[str, TinyFamily] = {
    "qwen3": TinyFamily("Qwen3ForCausalLM", "Qwen3Config"),
    "mistral": TinyFamily("MistralForCausalLM", "MistralConfig", (("sliding_window", None),)),
    "gemma3": TinyFamily(
        "Gemma3ForCausalLM",
        "Gemma3TextConfig",
        (
            ("sliding_window", 8),
            ("layer_types", ["sliding_attention"] * 2 + ["full_attention"]),
            ("query_pre_attn_scalar", 32),
        ),
    ),
}
"""Families tested on tiny models. Gemma 3 interleaves sliding-window layers (window 8) with
global ones, two to one."""


def build_tiny_model(family: str, target: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """Save a tiny random ``family`` model with the tokenizer of ``tokenizer_dir`` in ``target``."""
    import transformers

    spec = TINY_FAMILIES[family]
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    settings = dict(_SHAPE, **dict(spec.extra))
    if "layer_types" in settings:
        pattern = settings["layer_types"]
        depth = settings["num_hidden_layers"]
        settings["layer_types"] = [pattern[index % len(pattern)] for index in range(depth)]
    config = getattr(transformers, spec.config_class)(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        architectures=[spec.architecture],
        **settings,
    )
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if type(model).__name__ != spec.architecture:
        raise RuntimeError(f"{family}: transformers built {type(model).__name__}")
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copy(tokenizer_dir / name, target / name)
    return target
