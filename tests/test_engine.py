"""Per-request programs in the real vLLM engine (CPU build) on the bundled SmolLM2, float32.

Uses the session's PoLar and stock engines."""

from __future__ import annotations

from typing import Any

import pytest
from engine_checks import compare_with_reference, finish_requests, generate, polar_params

from polar_vllm.executor import merge_programs
from polar_vllm.program import parse_program

DEPTH = 30
MAX_TOKENS = 12
PROGRAMS = (
    "full",
    "",  # the empty program: embeddings -> final norm -> head
    "0-29,0-29",  # length 2D
    "0-9,8-9,10-29",  # repeat a 2-layer segment
    "0-20,20-29",  # repeat one layer
    "0-2,0-2,3-29",  # repeat a 3-layer segment
    "0-15,12-29",  # repeat a 4-layer segment
    "0-4,6-29",  # skip one layer
    "0-9,14-29",  # skip four layers
    "0-5,7-12,10-12,13-24,28-29",  # skips and a repeat
)
PROMPTS = (
    "The capital of France is",
    "Tom has 7 apples and buys 5 more. How many apples does he have?",
    "def fibonacci(n):",
    "Once upon a time, in a small village by the sea,",
    "The three primary colors are",
)


def _mixed_requests() -> list[tuple[str, str]]:
    """20 requests: every program twice, each time with a different prompt."""
    return [
        (PROMPTS[(index + index // len(PROGRAMS)) % len(PROMPTS)], PROGRAMS[index % len(PROGRAMS)])
        for index in range(2 * len(PROGRAMS))
    ]


def _model_summary(model: Any) -> dict[str, Any]:
    slots = getattr(model.model, "polar_slots", {})
    return {"class": type(model).__name__, "slots": sorted(int(name) for name in slots)}


def test_polar_engine_uses_polar_class_with_a_slot_per_extra_pass(polar_llm):
    (summary,) = polar_llm.apply_model(_model_summary)
    assert summary["class"] == "PolarLlamaForCausalLM"
    assert summary["slots"] == list(range(DEPTH, 2 * DEPTH))


def test_stock_engine_is_untouched_by_the_plugin(stock_llm):
    (summary,) = stock_llm.apply_model(_model_summary)
    assert summary == {"class": "LlamaForCausalLM", "slots": []}


def test_mixed_program_batch_matches_reference(polar_llm, reference_model, tokenizer):
    requests = _mixed_requests()
    assert len(requests) >= 16 and len(set(PROGRAMS)) >= 8
    schedule = merge_programs(tuple(dict.fromkeys(parse_program(p, DEPTH) for p in PROGRAMS)))
    # Steps that run pass 1 of a layer for some requests and pass 2 for others (split attention).
    assert sum(len(step.slots) > 1 for step in schedule.steps) >= 10
    outputs = generate(polar_llm, requests, MAX_TOKENS)
    comparison = compare_with_reference(
        reference_model,
        tokenizer.eos_token_id,
        [program for _, program in requests],
        outputs,
        MAX_TOKENS,
    )
    assert comparison.total_tokens >= 16 * 8
    assert comparison.agreement >= 0.99, comparison.mismatches


def test_programs_change_the_output(polar_llm):
    outputs = generate(polar_llm, [(PROMPTS[0], program) for program in PROGRAMS], MAX_TOKENS)
    distinct = {tuple(output.outputs[0].token_ids) for output in outputs}
    assert len(distinct) >= len(PROGRAMS) // 2


def test_full_program_equals_stock_vllm_exactly(polar_llm, stock_llm):
    requests = [(prompt, program) for prompt in PROMPTS for program in ("full", "0-29", None)]
    polar_outputs = generate(polar_llm, requests, MAX_TOKENS)
    stock_outputs = stock_llm.generate(
        [prompt for prompt, _ in requests], polar_params(None, MAX_TOKENS), use_tqdm=False
    )
    for polar_output, stock_output in zip(polar_outputs, stock_outputs, strict=True):
        assert polar_output.outputs[0].token_ids == stock_output.outputs[0].token_ids


BAD_PROGRAMS = (
    ({"polar_program": "0-30"}, "'0-30' is out of range"),
    ({"polar_program": "0-9,x"}, "'x'"),
    ({"polar_program": "3,3,3"}, "layer 3 appears 3 times"),
    ({"polar_program": "9-2"}, "9-2"),
    ({"polar_program": 3.5}, "float"),
    ({"polar_programme": "full"}, "polar_programme"),
)


@pytest.mark.parametrize(("extra_args", "named"), BAD_PROGRAMS)
def test_bad_program_fails_alone_and_engine_keeps_serving(polar_llm, extra_args, named):
    from vllm import SamplingParams

    engine = polar_llm.llm_engine
    good = {f"good-{index}": program for index, program in enumerate(("0-9,8-29", "full"))}
    for request_id, program in good.items():
        engine.add_request(request_id, PROMPTS[0], polar_params(program, 6))
    bad_params = SamplingParams(max_tokens=6, temperature=0, extra_args=extra_args)
    with pytest.raises(ValueError, match="polar") as error:
        engine.add_request("bad", PROMPTS[0], bad_params)
    assert named in str(error.value)
    finished = finish_requests(engine)
    assert sorted(finished) == sorted(good)
    assert all(len(output.outputs[0].token_ids) == 6 for output in finished.values())


def test_offline_generate_names_the_bad_program_then_serves_again(polar_llm):
    with pytest.raises(ValueError, match="depth 30"):
        generate(polar_llm, [(PROMPTS[0], "full"), (PROMPTS[1], "0-31")], 4)
    (output,) = generate(polar_llm, [(PROMPTS[0], "0-9,8-29")], 4)
    assert len(output.outputs[0].token_ids) == 4


def test_json_list_and_text_forms_run_the_same_program(polar_llm):
    requests = [
        (PROMPTS[2], "0-9,8-9,10-29"),
        (PROMPTS[2], str([*range(10), 8, 9, *range(10, 30)])),
    ]
    first, second = generate(polar_llm, requests, MAX_TOKENS)
    assert first.outputs[0].token_ids == second.outputs[0].token_ids
