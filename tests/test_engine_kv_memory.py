"""KV memory that follows each request's program, in the real engine (SmolLM2, float32): a
request gets KV blocks only in the KV-cache groups (here one per (layer, pass) slot) its
program enters, so a fixed KV budget holds more short-program requests than full-program ones;
a looping request gets pass-2 blocks and a non-looping one none; prefix-cache hits stay within
one program; the per-group work of a step (attention metadata, slot mappings) is shared or done
by one op, with vLLM's results. The engine core runs in the test process so the scheduler can
be inspected between steps."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from engine_checks import vllm_engine

from polar_vllm.compat.kv_cache_manager import layout_of_groups
from polar_vllm.program import parse_program

DEPTH = 30
BLOCK_SIZE = 32
PROMPT_BLOCKS = 3
"""Prompts take 65-88 tokens: three blocks per group, enough for their 8 new tokens too."""
MAX_TOKENS = 8
POOL_BLOCKS = 380
"""Blocks of one layer (k = 1): room for four full-program requests of three blocks."""
BLOCK_BYTES = BLOCK_SIZE * 2 * 3 * 64 * 4  # tokens x (K, V) x KV heads x head size x float32
SHORT = "0-14"
"""Half the layers: half the KV-cache groups of the full program."""


@pytest.fixture(scope="module")
def kv_llm(smollm2_dir: str) -> Iterator[Any]:
    """An in-process engine (the scheduler is reachable) with a KV budget of
    :data:`POOL_BLOCKS` one-layer blocks and prefix caching."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)  # it overrides the byte budget
        with vllm_engine(
            smollm2_dir,
            in_process=True,
            max_model_len=128,
            additional_config={"polar": {}},
            enable_prefix_caching=True,
            block_size=BLOCK_SIZE,
            kv_cache_memory_bytes=POOL_BLOCKS * BLOCK_BYTES,
            max_num_seqs=32,
            max_num_batched_tokens=4096,
        ) as llm:
            yield llm


def _params(program: str, max_tokens: int = MAX_TOKENS) -> Any:
    """Greedy parameters that run ``program`` for exactly ``max_tokens`` new tokens."""
    from vllm import SamplingParams

    extra_args = {"polar_program": program}
    return SamplingParams(
        max_tokens=max_tokens, temperature=0, ignore_eos=True, extra_args=extra_args
    )


def _scheduler(llm: Any) -> Any:
    return llm.llm_engine.engine_core.engine_core.scheduler


def _prompt(index: int) -> str:
    """A prompt of 65-88 tokens whose first block differs from every other index's."""
    return (
        f"Note {index}: the harbour town of Brightwater has three piers, a lighthouse built in "
        "1872, a fish market that opens at dawn and a ferry that crosses to the island twice a "
        "day. In winter the ferry stops and the keeper paints the piers. Question: how many "
        "piers are there? Answer:"
    )


def _run(llm: Any, requests: list[tuple[str, str]]) -> tuple[dict[str, Any], int]:
    """Run ``(prompt, program)`` requests to the end; their outputs by request id and the most
    requests the scheduler ran at once."""
    engine = llm.llm_engine
    ids = [f"r{index}" for index in range(len(requests))]
    for request_id, (prompt, program) in zip(ids, requests, strict=True):
        engine.add_request(request_id, prompt, _params(program))
    outputs: dict[str, Any] = {}
    peak = 0
    while engine.has_unfinished_requests():
        for output in engine.step():
            if output.finished:
                outputs[output.request_id] = output
        peak = max(peak, len(_scheduler(llm).running))
    return {request_id: outputs[request_id] for request_id in ids}, peak


def _fitting(llm: Any, program: str) -> int:
    """How many requests of ``program`` the pool holds at three blocks per group entered."""
    scheduler = _scheduler(llm)
    groups = scheduler.kv_cache_config.kv_cache_groups
    layout = layout_of_groups([group.layer_names for group in groups], DEPTH)
    entered = len(layout.groups_of(parse_program(program, DEPTH, 2)))
    free = scheduler.kv_cache_manager.block_pool.get_num_free_blocks()
    return free // (entered * PROMPT_BLOCKS)


def test_budget_for_n_full_programs_runs_more_short_programs(kv_llm):
    tokenizer = kv_llm.get_tokenizer()
    assert all(64 < len(tokenizer(_prompt(index)).input_ids) <= 88 for index in (0, 99))
    full_fit, short_fit = _fitting(kv_llm, "full"), _fitting(kv_llm, SHORT)
    assert full_fit == 4 and short_fit == 8
    _, full_peak = _run(kv_llm, [(_prompt(index), "full") for index in range(12)])
    _, short_peak = _run(kv_llm, [(_prompt(100 + index), SHORT) for index in range(12)])
    assert full_peak == full_fit
    assert short_peak == short_fit > full_fit


def test_only_a_looping_program_gets_pass_two_blocks(kv_llm):
    engine, scheduler = kv_llm.llm_engine, _scheduler(kv_llm)
    groups = scheduler.kv_cache_config.kv_cache_groups
    layout = layout_of_groups([group.layer_names for group in groups], DEPTH)
    programs = {"loop": "0-9,8-9,10-29", "full": "full", "skip": "0-9,14-29"}
    ids = {
        name: engine.add_request(name, _prompt(200 + index), _params(program, 4))
        for index, (name, program) in enumerate(programs.items())
    }
    engine.step()  # the prompts' prefill allocates their blocks
    with_blocks = {
        name: {
            (layout.groups[group].pass_index, layer)
            for group, block_ids in enumerate(scheduler.kv_cache_manager.get_block_ids(rid))
            if block_ids
            for layer in layout.groups[group].layers
        }
        for name, rid in ids.items()
    }
    while engine.has_unfinished_requests():
        engine.step()
    assert with_blocks["loop"] == {(0, layer) for layer in range(DEPTH)} | {(1, 8), (1, 9)}
    assert with_blocks["full"] == {(0, layer) for layer in range(DEPTH)}
    assert with_blocks["skip"] == {(0, layer) for layer in range(DEPTH) if not 10 <= layer <= 13}


def test_prefix_cache_hits_stay_within_one_program(kv_llm):
    prompt = _prompt(300)
    rounds = [(prompt, SHORT), (prompt, "0-14,0-3"), (prompt, "full"), (prompt, SHORT)]
    outputs = []
    for request in rounds:
        (output,) = _run(kv_llm, [request])[0].values()
        outputs.append(output)
    assert [output.num_cached_tokens for output in outputs[:3]] == [0, 0, 0]
    assert outputs[3].num_cached_tokens >= 2 * BLOCK_SIZE
    # The hit gives the same tokens as computing the prompt afresh.
    assert outputs[3].outputs[0].token_ids == outputs[0].outputs[0].token_ids


def _model_runner(llm: Any) -> Any:
    return llm.llm_engine.engine_core.engine_core.model_executor.driver_worker.worker.model_runner


def test_per_group_step_work_is_cheap_and_exact(kv_llm):
    """With one KV-cache group per slot, the CPU runner builds attention metadata once per spec
    (the other groups swap in their block tables) and computes every group's slot mapping with
    vLLM's CPU op directly, giving what vLLM's kernel launcher gives."""
    import torch
    from vllm.v1.worker.block_table import MultiGroupBlockTable

    runner = _model_runner(kv_llm)
    builders = [
        builder
        for groups in runner.attn_groups
        for attention_group in groups
        for builder in attention_group.metadata_builders
    ]
    assert len(builders) == 2 * DEPTH
    assert all(builder.supports_update_block_table for builder in builders)
    tables = runner.input_batch.block_table
    assert "compute_slot_mapping" in vars(tables)  # PoLar's direct op, on this instance
    # Two requests with different blocks in every group: 5 prompt tokens and 1 decode token.
    rows = [[3 + 2 * group, 40 + group] for group in range(len(tables.block_tables))]
    tables.add_row(tuple([row[0], row[0] + 1] for row in rows), 0)
    tables.add_row(tuple([row[1]] for row in rows), 1)
    query_start_loc = torch.tensor([0, 5, 6], dtype=torch.int32)
    positions = torch.tensor([28, 29, 30, 31, 32, 7], dtype=torch.int64)
    try:
        tables.commit_block_table(2)  # the rows reach the tables the op reads, as each step
        tables.compute_slot_mapping(2, query_start_loc, positions)
        direct = [table.slot_mapping.gpu[:6].clone() for table in tables.block_tables]
        MultiGroupBlockTable.compute_slot_mapping(tables, 2, query_start_loc, positions)
        launched = [table.slot_mapping.gpu[:6].clone() for table in tables.block_tables]
    finally:
        tables.clear_row(0)
        tables.clear_row(1)
        tables.commit_block_table(2)
    assert all(torch.equal(a, b) for a, b in zip(direct, launched, strict=True))
    first, second = rows[7]
    assert direct[7].tolist() == [
        *(first * BLOCK_SIZE + offset for offset in range(28, 32)),
        (first + 1) * BLOCK_SIZE,
        second * BLOCK_SIZE + 7,
    ]


def test_decode_steps_make_no_per_group_calls(kv_llm, monkeypatch):
    """Per-step work that grows with the number of KV-cache groups must not creep back: a
    decode step that needs no new block asks no group's manager anything (its groups are in
    lockstep), and the CPU runner builds attention metadata once per step, not once per group.
    The prefill step asks each group a request enters, as vLLM does."""
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionMetadataBuilder

    from polar_vllm.compat.kv_cache_manager import ProgramGroupManager

    calls = {"manager": 0, "build": 0}

    def counted(kind: str, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[kind] += 1
            return function(*args, **kwargs)

        return wrapper

    for name in ("get_num_blocks_to_allocate", "allocate_new_blocks", "cache_blocks"):
        monkeypatch.setattr(
            ProgramGroupManager, name, counted("manager", getattr(ProgramGroupManager, name))
        )
    monkeypatch.setattr(
        CPUAttentionMetadataBuilder,
        "build",
        counted("build", CPUAttentionMetadataBuilder.build),
    )
    requests = [(_prompt(400 + index), "full") for index in range(4)]
    engine = kv_llm.llm_engine
    for index, (prompt, program) in enumerate(requests):
        engine.add_request(f"c{index}", prompt, _params(program))
    steps = 0
    while engine.has_unfinished_requests():
        engine.step()
        steps += 1
    # 1 prefill step and MAX_TOKENS - 1 decode steps, all within the prompts' three blocks.
    assert steps >= MAX_TOKENS
    # Prefill: the coordinator asks each of the 30 groups of each request four times (the
    # admission check and the blocks to allocate, new blocks, blocks to cache); the decode
    # steps ask none (without the lockstep path, each would ask 3 x 30 per request).
    assert calls["manager"] <= len(requests) * DEPTH * 4
    assert calls["build"] <= steps
