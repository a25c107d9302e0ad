"""Helpers shared by the engine tests: run requests through vLLM and compare with the
transformers reference executor."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from polar_vllm.compat.engine_environment import engine_process
from polar_vllm.compat.shutdown import shutdown_engine
from polar_vllm.executor.reference import greedy_choices
from polar_vllm.program import parse_program

SCHEDULING_FEATURES = {
    "max_model_len": 192,
    "enable_prefix_caching": True,
    "enable_chunked_prefill": True,
    "max_num_batched_tokens": 64,
    "max_num_seqs": 8,
    "block_size": 32,
    "num_gpu_blocks_override": 8,
    "disable_log_stats": False,
}
"""Engine settings under which vLLM's scheduling features all happen on short prompts:
64-token prefill chunks, prefix caching, and 8 KV blocks of 32 tokens, so that requests are
preempted and recomputed (metrics on, to count them)."""

SHARED_PREFIX = (
    "You are a careful assistant. Read the following notes about the harbour town of "
    "Brightwater before answering. The town has three piers, a lighthouse built in 1872, "
    "a fish market that opens at dawn, and a ferry that crosses to the island twice a day. "
    "In winter the ferry stops, the market moves indoors and the lighthouse keeper paints "
    "the piers. "
)
QUESTIONS = (
    "Question: how many piers does the town have? Answer:",
    "Question: when was the lighthouse built? Answer:",
    "Question: when does the fish market open? Answer:",
    "Question: how often does the ferry cross? Answer:",
)


def shared_prefix_requests(programs: Sequence[str]) -> list[tuple[str, str]]:
    """24 ``(prompt, program)`` requests whose prompts share a long prefix (about 80 tokens:
    two 64-token prefill chunks): 16 over ``programs``, then the first 8 prompts again under
    other programs, so a prefix cache must not hand them the first round's KV."""
    requests = [
        (SHARED_PREFIX + QUESTIONS[index % len(QUESTIONS)], programs[index // 2 % len(programs)])
        for index in range(16)
    ]
    requests += [
        (prompt, programs[(index + 3) % len(programs)])
        for index, (prompt, _) in enumerate(requests[:8])
    ]
    return requests


@contextlib.contextmanager
def vllm_engine(model: str, in_process: bool = False, **kwargs: Any) -> Iterator[Any]:
    """A ``vllm.LLM`` (eager unless ``enforce_eager=False`` is given, float32) that is shut
    down when the block ends, in vLLM's default layout (engine and worker processes of its own)
    or, ``in_process``, in this one: 5-10 s to start instead of 30-50 s on two cores.

    At most one engine may run in this process at a time: vLLM keeps one set of parallel
    groups per process, and an in-process engine's shutdown tears them down. Engines that live
    beside others (the session's, the benchmarks' side-by-side ones) use the default layout."""
    from vllm import LLM

    settings = {"enforce_eager": True, "dtype": "float32", "max_model_len": 512}
    settings.update(kwargs)
    with engine_process(in_process):
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
        """Share of generated positions where the engine's token is the reference's choice."""
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
    """Compare each output with the reference executor on the same prompt tokens: each engine
    token against the reference's greedy choice after the same prefix (one recompute per
    output; all equal means the reference's own greedy run gives the engine's tokens). An
    output that stops short of ``max_tokens`` without EOS counts its missing tokens as
    mismatches."""
    depth = model.config.num_hidden_layers
    matched = total = 0
    mismatches = []
    for program_text, output in zip(programs, outputs, strict=True):
        program = parse_program("full" if program_text is None else program_text, depth)
        got = list(output.outputs[0].token_ids)
        expected = greedy_choices(model, output.prompt_token_ids, got, program)
        agreeing = sum(a == b for a, b in zip(expected, got, strict=True))
        stopped = bool(got) and got[-1] == eos_token_id
        positions = len(got) if stopped else max(len(got), max_tokens)
        matched += agreeing
        total += positions
        if agreeing < positions:
            mismatches.append(f"{program_text!r}: reference choices {expected} engine {got}")
    return Comparison(matched, total, tuple(mismatches))


def metric_total(llm: Any, name: str) -> float:
    """The sum of an engine's metric ``name`` over its label sets."""
    return sum(metric.value for metric in llm.get_metrics() if metric.name == name)


def check_scheduling_features(
    llm: Any, programs: Sequence[str], reference_model: Any, tokenizer: Any, max_tokens: int
) -> None:
    """Run :func:`shared_prefix_requests` on an engine with :data:`SCHEDULING_FEATURES`: its
    prompts take two prefill chunks, some requests are preempted and some hit the prefix
    cache, and the tokens match the reference executor (99% of positions)."""
    requests = shared_prefix_requests(programs)
    hits_before = metric_total(llm, "vllm:prefix_cache_hits")
    preemptions_before = metric_total(llm, "vllm:num_preemptions")
    outputs = generate(llm, requests, max_tokens)
    # Prompts of two chunks that grow into a fourth block while decoding.
    assert all(64 < len(output.prompt_token_ids) < 96 for output in outputs)
    assert metric_total(llm, "vllm:num_preemptions") > preemptions_before
    assert metric_total(llm, "vllm:prefix_cache_hits") > hits_before
    comparison = compare_with_reference(
        reference_model,
        tokenizer.eos_token_id,
        [program for _, program in requests],
        outputs,
        max_tokens,
    )
    assert comparison.agreement >= 0.99, comparison.mismatches
