"""The reference executor against HF transformers on the bundled model."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from polar_vllm.executor.reference import generate_greedy, greedy_choices, program_logits
from polar_vllm.models.bundled import prepare_model
from polar_vllm.program import ProgramError, full_program, parse_program

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Tom has 7 apples and buys 5 more."]


@pytest.fixture(scope="module")
def model_and_tokenizer():
    directory = prepare_model("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    return model, tokenizer


@pytest.mark.parametrize("prompt", PROMPTS)
def test_full_program_matches_hf_generate(model_and_tokenizer, prompt):
    model, tokenizer = model_and_tokenizer
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    expected = model.generate(
        ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.eos_token_id
    )[0, ids.shape[1] :].tolist()
    program = full_program(model.config.num_hidden_layers)
    got = generate_greedy(model, ids[0].tolist(), program, 12, tokenizer.eos_token_id)
    assert got == expected[: len(got)]
    assert len(got) == len(expected) or got[-1] == tokenizer.eos_token_id


def test_programs_change_the_output(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    depth = model.config.num_hidden_layers
    ids = tokenizer(PROMPTS[0], return_tensors="pt").input_ids
    full = program_logits(model, ids, full_program(depth))
    skipped = program_logits(model, ids, parse_program("0-19,25-29", depth))
    looped = program_logits(model, ids, parse_program("0-9,8-9,10-29", depth))
    empty = program_logits(model, ids, parse_program("", depth))
    assert full.shape == skipped.shape == looped.shape == empty.shape
    assert not torch.allclose(full, skipped)
    assert not torch.allclose(full, looped)
    assert torch.isfinite(empty).all()


def test_reference_is_causal(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    depth = model.config.num_hidden_layers
    program = parse_program("0-9,8-9,10-29", depth)
    ids = tokenizer(PROMPTS[1], return_tensors="pt").input_ids
    whole = program_logits(model, ids, program)
    prefix = program_logits(model, ids[:, :-2], program)
    torch.testing.assert_close(whole[:, :-2], prefix, rtol=1e-4, atol=1e-4)


def test_reference_rejects_bad_program(model_and_tokenizer):
    model, _ = model_and_tokenizer
    with pytest.raises(ProgramError, match="depth 30"):
        generate_greedy(model, [1, 2, 3], [0, 30], 2)


def test_greedy_choices_give_the_greedy_run_in_one_recompute(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    program = parse_program("0-9,8-9,10-29", model.config.num_hidden_layers)
    prompt = tokenizer(PROMPTS[2]).input_ids
    generated = generate_greedy(model, prompt, program, 8, tokenizer.eos_token_id)
    assert greedy_choices(model, prompt, generated, program) == generated
    # A wrong token is caught where it stands; later positions are judged on its prefix.
    wrong = [*generated[:3], (generated[3] + 1) % model.config.vocab_size, *generated[4:]]
    choices = greedy_choices(model, prompt, wrong, program)
    assert choices[:4] == generated[:4] and choices[3] != wrong[3]
    assert greedy_choices(model, prompt, [], program) == []
