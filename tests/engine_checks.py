"""Helpers shared by the engine tests: run requests through vLLM and compare with the
transformers reference executor."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from polar_vllm.compat.shutdown import shutdown_engine
from polar_vllm.executor.reference import generate_greedy
from polar_vllm.program import parse_program


@contextlib.contextmanager
def vllm_engine(model: str, **kwargs: Any) -> Iterator[Any]:
    """A ``vllm.LLM`` (eager, float32) that is shut down when the block ends."""
    from vllm import LLM

    settings = {"enforce_eager": True, "dtype": "float32", "max_model_len": 512}
    settings.update(kwargs)
    llm = LLM(model=model, **settings)
    try:
        yield llm
    finally:
        shutdown_engine(llm)
        del llm
        gc.collect()


@dataclass(frozen=True)
class Comparison:
    """Token-level agreement of engine outputs with the reference executor."""

    matched_tokens: int
    total_tokens: int
    mismatches: tuple[str, ...]

    @property
    def agreement(self) -> float:
        """Share of generated positions where both produced the same token."""
        return self.matched_tokens / max(self.total_tokens, 1)


def polar_params(program: str | None, max_tokens: int) -> Any:
    """Greedy ``SamplingParams`` carrying ``program`` (``None``: no program)."""
    from vllm import SamplingParams

    extra = None if program is None else {"polar_program": program}
    return SamplingParams(max_tokens=max_tokens, temperature=0, extra_args=extra)


def finish_requests(engine: Any) -> dict[str, Any]:
    """Step ``engine`` until no request is left; the finished outputs by request id."""
    finished = {}
    while engine.has_unfinished_requests():
        for output in engine.step():
            if output.finished:
                finished[output.request_id] = output
    return finished


def generate(llm: Any, requests: Sequence[tuple[str, str | None]], max_tokens: int) -> list[Any]:
    """Run ``(prompt, program)`` requests as one batch; vLLM's ``RequestOutput`` list."""
    prompts = [prompt for prompt, _ in requests]
    params = [polar_params(program, max_tokens) for _, program in requests]
    return llm.generate(prompts, params, use_tqdm=False)


def compare_with_reference(
    model: Any,
    eos_token_id: int | None,
    programs: Sequence[str | None],
    outputs: Sequence[Any],
    max_tokens: int,
) -> Comparison:
    """Compare each output with the reference executor run on the same prompt tokens."""
    depth = model.config.num_hidden_layers
    matched = total = 0
    mismatches = []
    for program_text, output in zip(programs, outputs, strict=True):
        program = parse_program("full" if program_text is None else program_text, depth)
        expected = generate_greedy(
            model, output.prompt_token_ids, program, max_tokens, eos_token_id
        )
        got = list(output.outputs[0].token_ids)
        matched += sum(a == b for a, b in zip(expected, got, strict=False))
        total += max(len(expected), len(got))
        if expected != got:
            mismatches.append(f"{program_text!r}: reference {expected} engine {got}")
    return Comparison(matched, total, tuple(mismatches))
