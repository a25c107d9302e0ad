"""Programs under vLLM's scheduling features: small chunked-prefill chunks, prefix caching
with shared prompts, a KV cache so small that requests are preempted and recomputed, extra
KV slots for only some layers, and program-aware admission (also of a burst that reaches an
idle engine). One engine for the module, float32."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from engine_checks import (
    QUESTIONS,
    SCHEDULING_FEATURES,
    SHARED_PREFIX,
    check_scheduling_features,
    compare_with_reference,
    generate,
    vllm_engine,
)

MAX_TOKENS = 16
LOOP_LAYERS = "0-19"
PROGRAMS = (
    "full",
    "0-9,8-9,10-29",
    "0-3,0-3,4-29",
    "0-14,16-29",
    "0-5,10-19,19,20-29",
    "",
    "0-19,0-19,20-29",
    "0-7,9-12,11-12,13-25",
)
BURST_GROUP_PROGRAM = "0-14,16-29"
"""The program of the largest group of a burst: the first batch an idle engine admits."""


@pytest.fixture(scope="module")
def scheduling_llm(smollm2_dir: str) -> Iterator[Any]:
    """Chunks of 64 tokens, prefix caching, 8 blocks of 32 tokens, loop slots for 0-19,
    program-aware admission with a 120 s delay bound (more requests than ``max_num_seqs``, so
    it reorders)."""
    with vllm_engine(
        smollm2_dir,
        in_process=True,
        additional_config={
            "polar": {
                "loop_layers": LOOP_LAYERS,
                "scheduling": "program_aware",
                "max_delay_s": 120,
            }
        },
        **SCHEDULING_FEATURES,
    ) as llm:
        yield llm


def _slots(model: Any) -> list[int]:
    return sorted(int(name) for name in model.model.polar_slots)


def test_program_aware_scheduler_is_in_use(scheduling_llm):
    scheduler_cls = scheduling_llm.llm_engine.vllm_config.scheduler_config.scheduler_cls
    assert scheduler_cls == "polar_vllm.compat.scheduler.ProgramAwareScheduler"


def test_only_loop_layers_get_extra_slots(scheduling_llm):
    (slots,) = scheduling_llm.apply_model(_slots)
    assert slots == [30 + layer for layer in range(20)]


def test_repeat_outside_loop_layers_is_refused(scheduling_llm):
    with pytest.raises(ValueError, match="layer 25 may run only once"):
        generate(scheduling_llm, [(QUESTIONS[0], "0-29,25")], 4)


def test_chunked_prefill_prefix_caching_and_preemption_match_reference(
    scheduling_llm, reference_model, tokenizer
):
    check_scheduling_features(scheduling_llm, PROGRAMS, reference_model, tokenizer, MAX_TOKENS)


def test_same_prompt_under_two_programs_in_turn(scheduling_llm, reference_model, tokenizer):
    prompt = SHARED_PREFIX + QUESTIONS[1]
    requests = [(prompt, "full"), (prompt, "0-9,8-9,10-29"), (prompt, "full")]
    outputs = [generate(scheduling_llm, [request], MAX_TOKENS)[0] for request in requests]
    comparison = compare_with_reference(
        reference_model,
        tokenizer.eos_token_id,
        [program for _, program in requests],
        outputs,
        MAX_TOKENS,
    )
    assert comparison.mismatches == ()


def test_an_idle_engine_admits_a_burst_by_program(scheduling_llm):
    # Four requests with four programs arrive first, then eight (max_num_seqs) with one program.
    # The idle engine waits for the whole burst, so its first batch holds only the eight, and
    # none of the four is admitted before all eight are, instead of the batch starting with the
    # first arrival's program.
    programs = [PROGRAMS[index] for index in (1, 2, 4, 7)]
    singles = [(f"Question: what is {n} + {n}? Answer:", p) for n, p in enumerate(programs)]
    group = [(f"Question: what is {n} times 3? Answer:", BURST_GROUP_PROGRAM) for n in range(8)]
    outputs = generate(scheduling_llm, singles + group, 4)
    scheduled = [output.metrics.scheduled_ts for output in outputs]
    singles_scheduled, group_scheduled = scheduled[: len(singles)], scheduled[len(singles) :]
    assert min(singles_scheduled) > min(group_scheduled), scheduled
    assert max(group_scheduled) <= min(singles_scheduled), scheduled
