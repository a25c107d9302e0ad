"""PoLar model classes: vLLM's own model classes with a layer-program decoder loop.

``POLAR_ARCHITECTURES`` maps a Hugging Face architecture name to its PoLar class (registered
with vLLM by :func:`polar_vllm.register`, as ``module:Class`` so nothing imports eagerly).
"""

POLAR_ARCHITECTURES: dict[str, tuple[str, str]] = {
    "LlamaForCausalLM": ("PolarLlamaForCausalLM", "polar_vllm.models.llama:PolarLlamaForCausalLM"),
    "Qwen2ForCausalLM": ("PolarQwen2ForCausalLM", "polar_vllm.models.qwen2:PolarQwen2ForCausalLM"),
}
"""HF architecture -> (PoLar architecture name, ``module:Class`` of its implementation)."""

__all__ = ["POLAR_ARCHITECTURES"]
