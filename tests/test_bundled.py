"""Bundled model preparation and the stock vLLM engine on the bundled model."""

import shutil

import pytest

from polar_vllm.executor.reference import generate_greedy
from polar_vllm.models.bundled import is_complete, model_dir, prepare_model
from polar_vllm.program import full_program


def test_prepared_model_is_complete():
    directory = prepare_model("smollm2-135m")
    assert directory == model_dir("smollm2-135m")
    assert is_complete(directory)


def test_corrupt_or_partial_cache_is_detected(tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(prepare_model("smollm2-135m"), copy)
    assert is_complete(copy)
    weights = copy / "model.safetensors"
    with weights.open("r+b") as handle:
        handle.seek(1 << 20)
        handle.write(b"\x00corrupt\x00")
    assert not is_complete(copy)
    weights.unlink()
    assert not is_complete(copy)


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="unknown bundled model 'nope'"):
        prepare_model("nope")


def test_stock_vllm_matches_reference_full_program(stock_llm, reference_model, tokenizer):
    from vllm import SamplingParams

    prompts = ["The capital of France is", "Tom has 7 apples and buys 5 more. Now he has"]
    outputs = stock_llm.generate(prompts, SamplingParams(max_tokens=10, temperature=0))
    program = full_program(reference_model.config.num_hidden_layers)
    for output in outputs:
        expected = list(output.outputs[0].token_ids)
        got = generate_greedy(
            reference_model, output.prompt_token_ids, program, 10, tokenizer.eos_token_id
        )
        assert got == expected
