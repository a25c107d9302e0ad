"""PoLar on vLLM's default compiled path (CPU: Dynamo and Inductor), on the bundled SmolLM2,
float32: one compiled engine for the module, started without ``enforce_eager``.

Its settings make every scheduling feature happen (64-token prefill chunks, prefix caching,
8 KV blocks of 32 tokens, so requests are preempted and recomputed). Mixed-program batches
must give the eager PoLar engine's tokens and match the recompute reference, and each decoder
layer must compile exactly once, whatever rows and programs later batches bring."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from engine_checks import (
    SCHEDULING_FEATURES,
    check_scheduling_features,
    compare_with_reference,
    finish_requests,
    generate,
    polar_params,
    vllm_engine,
)

DEPTH = 30
MAX_TOKENS = 12
PROGRAMS = (
    "full",
    "",
    "0-29,0-29",
    "0-9,8-9,10-29",
    "0-2,0-2,3-29",
    "0-4,6-29",
    "0-9,14-29",
    "0-5,7-12,10-12,13-24,28-29",
)
PROMPTS = (
    "The capital of France is",
    "Tom has 7 apples and buys 5 more. How many apples does he have?",
    "def fibonacci(n):",
    "Once upon a time, in a small village by the sea,",
)


@pytest.fixture(scope="module")
def compiled_llm(smollm2_dir: str) -> Iterator[Any]:
    """PoLar on SmolLM2 in vLLM's default mode (compiled), with small chunks and KV cache."""
    with vllm_engine(
        smollm2_dir,
        in_process=True,
        enforce_eager=False,
        additional_config={"polar": {}},
        **SCHEDULING_FEATURES,
    ) as llm:
        yield llm


def _compilations(model: Any) -> int | None:
    layers = model.polar_compiled_layers
    return None if layers is None else layers.compilations


def _mixed_requests() -> list[tuple[str, str]]:
    return [
        (PROMPTS[index % len(PROMPTS)], PROGRAMS[(index + index // 8) % len(PROGRAMS)])
        for index in range(24)
    ]


def test_engine_runs_compiled_one_graph_per_layer(compiled_llm, polar_llm):
    assert compiled_llm.llm_engine.vllm_config.model_config.enforce_eager is False
    # The warm-up forward compiled every layer once; the eager engine compiles nothing.
    assert compiled_llm.apply_model(_compilations) == [DEPTH]
    assert polar_llm.apply_model(_compilations) == [None]


def test_mixed_programs_give_eager_tokens_and_match_reference(
    compiled_llm, polar_llm, reference_model, tokenizer
):
    requests = _mixed_requests()
    compiled = generate(compiled_llm, requests, MAX_TOKENS)
    eager = generate(polar_llm, requests, MAX_TOKENS)
    same = sum(
        a == b
        for c, e in zip(compiled, eager, strict=True)
        for a, b in zip(c.outputs[0].token_ids, e.outputs[0].token_ids, strict=False)
    )
    total = sum(len(output.outputs[0].token_ids) for output in eager)
    assert total >= 20 * MAX_TOKENS
    assert same / total >= 0.99, (same, total)
    comparison = compare_with_reference(
        reference_model,
        tokenizer.eos_token_id,
        [program for _, program in requests],
        compiled,
        MAX_TOKENS,
    )
    assert comparison.agreement >= 0.99, comparison.mismatches


def test_chunked_prefill_prefix_caching_and_preemption_match_reference(
    compiled_llm, reference_model, tokenizer
):
    check_scheduling_features(compiled_llm, PROGRAMS, reference_model, tokenizer, 16)


def test_one_request_alone_runs_the_compiled_layers(compiled_llm, polar_llm):
    # Steps of one row (a lone request's decode) run the code compiled on many rows.
    request = [(PROMPTS[2], "0-9,8-9,10-29")]
    compiled = generate(compiled_llm, request, MAX_TOKENS)[0].outputs[0].token_ids
    eager = generate(polar_llm, request, MAX_TOKENS)[0].outputs[0].token_ids
    assert compiled == eager


def test_bad_program_fails_alone_and_compiled_engine_keeps_serving(compiled_llm):
    from vllm import SamplingParams

    engine = compiled_llm.llm_engine
    good = {f"good-{index}": program for index, program in enumerate(("0-9,8-29", "full"))}
    for request_id, program in good.items():
        engine.add_request(request_id, PROMPTS[0], polar_params(program, 6))
    bad = SamplingParams(max_tokens=6, temperature=0, extra_args={"polar_program": "0-30"})
    with pytest.raises(ValueError, match="'0-30' is out of range"):
        engine.add_request("bad", PROMPTS[0], bad)
    finished = finish_requests(engine)
    assert sorted(finished) == sorted(good)
    assert all(len(output.outputs[0].token_ids) == 6 for output in finished.values())


def test_no_batch_recompiled_a_layer(compiled_llm):
    # Runs last: after every batch above (1 to 64 rows, 8 programs, split two-pass steps,
    # chunked prefill, preemption), still one compilation per layer.
    assert compiled_llm.apply_model(_compilations) == [DEPTH]
