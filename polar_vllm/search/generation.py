"""Generate text for (prompt, program) pairs through one of two back ends.

* :class:`VllmProgramGenerator` sends every pair to a PoLar-enabled vLLM engine as one
  batched ``LLM.generate`` call, the program riding in
  ``SamplingParams.extra_args["polar_program"]``.
* :class:`ReferenceProgramGenerator` runs the pairs one at a time through the transformers
  reference executor (:mod:`polar_vllm.executor.reference`); it is the slow ground truth.

Search, predictor evaluation and benchmarks are written against :class:`ProgramGenerator`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from polar_vllm.program import Program, format_program, validate_program

__all__ = [
    "GenerationRequest",
    "ProgramGenerator",
    "ReferenceProgramGenerator",
    "VllmProgramGenerator",
    "polar_sampling_params",
]


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to run under one program (greedy unless ``temperature`` > 0)."""

    prompt: str
    program: Program
    max_tokens: int = 32
    temperature: float = 0.0
    seed: int | None = None


class ProgramGenerator(Protocol):
    """Anything that generates the completions of a list of (prompt, program) requests."""

    depth: int

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """The generated text of each request, in order."""
        ...


def polar_sampling_params(request: GenerationRequest) -> Any:
    """vLLM ``SamplingParams`` for ``request``, its program in ``extra_args``."""
    from vllm import SamplingParams

    return SamplingParams(
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        seed=request.seed,
        extra_args={"polar_program": format_program(request.program)},
    )


class VllmProgramGenerator:
    """Batched generation through a PoLar-enabled ``vllm.LLM``.

    A sampled request with a ``seed`` draws from its own random stream, so its sample does not
    depend on the batch around it (on CPU too, chunked prefill included: see
    :mod:`polar_vllm.compat.seeded_sampling`)."""

    def __init__(self, llm: Any, *, use_tqdm: bool = False) -> None:
        self.llm = llm
        self.depth = int(llm.llm_engine.model_config.hf_config.num_hidden_layers)
        self.use_tqdm = use_tqdm

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """All requests in one engine call; the engine batches mixed programs itself."""
        if not requests:
            return []
        for request in requests:
            validate_program(request.program, self.depth)
        outputs = self.llm.generate(
            [request.prompt for request in requests],
            [polar_sampling_params(request) for request in requests],
            use_tqdm=self.use_tqdm,
        )
        return [output.outputs[0].text for output in outputs]


class ReferenceProgramGenerator:
    """One-request-at-a-time generation through the transformers reference executor.

    Sampling (``temperature`` > 0) is not supported: the reference is greedy only."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.depth = int(model.config.num_hidden_layers)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """Greedy completions, computed one request after another."""
        from polar_vllm.executor.reference import generate_greedy

        texts = []
        for request in requests:
            if request.temperature > 0:
                raise ValueError("the reference generator is greedy only (temperature must be 0)")
            prompt_ids = self.tokenizer(request.prompt, add_special_tokens=False).input_ids
            tokens = generate_greedy(
                self.model,
                prompt_ids,
                request.program,
                request.max_tokens,
                self.tokenizer.eos_token_id,
            )
            texts.append(self.tokenizer.decode(tokens, skip_special_tokens=True))
        return texts
