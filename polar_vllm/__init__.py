"""polar-vllm: Program-of-Layers (PoLar) per-request layer programs for vLLM."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from polar_vllm.engine.request_programs import ResolvedProgram

__version__ = "0.1.0"
__all__ = ["polar_program", "register"]


def register() -> None:
    """vLLM general-plugin entry point (``vllm.general_plugins: polar``).

    vLLM calls it in every process it starts. It registers the PoLar model classes (under
    their own architecture names, which only a PoLar configuration selects) and installs the
    version-specific hooks of :mod:`polar_vllm.compat`, each of which does nothing unless
    ``additional_config["polar"]`` is present: with PoLar off, vLLM behaves exactly as stock,
    except for one deliberate fix that stock models get too (seeded sampling with chunked
    prefill on CPU, :mod:`polar_vllm.compat.seeded_sampling`).
    """
    from vllm import ModelRegistry

    from polar_vllm import compat
    from polar_vllm.models import POLAR_ARCHITECTURES

    supported = set(ModelRegistry.get_supported_archs())
    for polar_name, class_path in POLAR_ARCHITECTURES.values():
        if polar_name not in supported:
            ModelRegistry.register_model(polar_name, class_path)
    compat.install()


def polar_program(
    llm: Any,
    prompt: str,
    program: str | Sequence[int] | None = None,
    question: str | None = None,
) -> ResolvedProgram:
    """The program a request with ``prompt`` (and its own ``program`` or predictor
    ``question``, if given) runs in the offline ``vllm.LLM`` ``llm``, and its source
    (``request``, ``predictor`` or ``default``).

    ``len(result.program)`` is the executed-layer count and ``result.text`` the canonical text.
    Raises ``ValueError`` when PoLar is off for ``llm``, and
    :class:`~polar_vllm.program.ProgramError` for a bad ``program``.
    """
    from polar_vllm.compat.llm_generate import program_for_prompt

    return program_for_prompt(llm, prompt, program, question)
