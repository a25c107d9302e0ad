"""PoLar under tensor parallelism on the CPU build: Qwen2.5-Coder-0.5B (14 heads, 2 KV heads;
SmolLM2's 9 heads do not divide by 2) with ``tensor_parallel_size=2``, one OpenMP thread set
per rank (``VLLM_CPU_OMP_THREADS_BIND="0|1"``; without it the CPU worker refuses to start with
"Not enough allowed NUMA nodes"). Every rank runs the same merged schedule, so a batch of
mixed programs gives the same greedy tokens as one rank.

Slow: two engines on the ~490 MB model; ``make test-full`` runs it."""

from __future__ import annotations

import pytest
from engine_checks import generate, vllm_engine

from polar_vllm.models.bundled import prepare_model

pytestmark = pytest.mark.slow

MAX_TOKENS = 8
PROGRAMS = ("full", "", "0-23,0-23", "0-11,8-11,12-23", "0-9,14-23", "0-3,3,4-15,18-23")
PROMPTS = ("The capital of France is", "def fibonacci(n):", "What is 12 + 30? Answer:")


def test_tensor_parallel_mixed_programs_equal_one_rank(monkeypatch):
    qwen_dir = str(prepare_model("qwen2.5-coder-0.5b"))
    requests = [(prompt, program) for prompt in PROMPTS for program in PROGRAMS]
    polar = {"polar": {}}
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0|1")
    with vllm_engine(qwen_dir, additional_config=polar, tensor_parallel_size=2) as two_ranks:
        parallel = generate(two_ranks, requests, MAX_TOKENS)
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND")
    with vllm_engine(qwen_dir, additional_config=polar) as one_rank:
        single = generate(one_rank, requests, MAX_TOKENS)
    tokens = [list(output.outputs[0].token_ids) for output in parallel]
    expected = [list(output.outputs[0].token_ids) for output in single]
    mismatched = [
        (request, got, want)
        for request, got, want in zip(requests, tokens, expected, strict=True)
        if got != want
    ]
    assert mismatched == []
