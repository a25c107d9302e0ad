"""PoLar model classes: vLLM's own model classes with a layer-program decoder loop.

:data:`POLAR_FAMILIES` is the one registration table: a vLLM architecture name, the model
family it belongs to, and the module of its PoLar class. :func:`polar_vllm.register`
registers every class with vLLM as ``module:Class`` (nothing imports eagerly); a PoLar
configuration selects the class of the served model's architecture and refuses any other
architecture (:func:`unsupported_architecture_message`). docs/model_families.md says how to
add a family.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "POLAR_ARCHITECTURES",
    "POLAR_FAMILIES",
    "PolarFamily",
    "unsupported_architecture_message",
]


@dataclass(frozen=True)
class PolarFamily:
    """One supported model family: vLLM's ``architecture`` and the module of its PoLar class."""

    family: str
    architecture: str
    module: str

    @property
    def polar_name(self) -> str:
        """The architecture name the PoLar class is registered under."""
        return f"Polar{self.architecture}"

    @property
    def class_path(self) -> str:
        """``module:Class`` of the PoLar class, as vLLM's model registry takes it."""
        return f"polar_vllm.models.{self.module}:{self.polar_name}"


POLAR_FAMILIES: tuple[PolarFamily, ...] = (
    PolarFamily("Llama (Llama 2/3, SmolLM2, ...)", "LlamaForCausalLM", "llama"),
    PolarFamily("Mistral", "MistralForCausalLM", "mistral"),
    PolarFamily("Qwen2 (Qwen2, Qwen2.5, Qwen2.5-Coder)", "Qwen2ForCausalLM", "qwen2"),
    PolarFamily("Qwen3 (dense)", "Qwen3ForCausalLM", "qwen3"),
    PolarFamily("Gemma 3 (text only)", "Gemma3ForCausalLM", "gemma3"),
)
"""The model families PoLar runs, one entry per vLLM architecture."""

POLAR_ARCHITECTURES: dict[str, tuple[str, str]] = {
    family.architecture: (family.polar_name, family.class_path) for family in POLAR_FAMILIES
}
"""vLLM architecture -> (PoLar architecture name, ``module:Class`` of its implementation)."""


def unsupported_architecture_message(architectures: list[str]) -> str:
    """Why PoLar refuses a model of ``architectures``, naming the supported ones."""
    supported = ", ".join(f"{family.architecture}" for family in POLAR_FAMILIES)
    found = ", ".join(architectures) or "none"
    return (
        f"PoLar does not support the architecture {found}; supported: {supported} "
        f"(docs/model_families.md says how to add a family)"
    )
