"""The demo behind ``make demo``: the bundled model in vLLM, and its generations
under two different layer programs side by side."""

from __future__ import annotations

import os

from polar_vllm.bundled import prepare_model

DEMO_PROMPTS = (
    "Tom has 7 apples and buys 5 more. How many apples does Tom have now?",
    "The capital of France is",
    "Write a haiku about the sea.",
)
DEMO_PROGRAMS = ("full", "0-9,8-9,10-29")


def _small_cpu_kv_cache() -> None:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def check_vllm_loads(model_directory: str) -> str:
    """Load ``model_directory`` in vLLM, generate a few tokens, and return the text."""
    from vllm import LLM, SamplingParams

    _small_cpu_kv_cache()
    llm = LLM(model=model_directory, enforce_eager=True, dtype="bfloat16", max_model_len=512)
    output = llm.generate(["The capital of France is"], SamplingParams(max_tokens=8, temperature=0))
    text = output[0].outputs[0].text
    if not text:
        raise RuntimeError(f"vLLM generated nothing for {model_directory}")
    return text


def run_demo(max_tokens: int = 24) -> None:
    """Print vLLM's generations and the reference executor's under two programs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import LLM, SamplingParams

    from polar_vllm.program import parse_program
    from polar_vllm.reference import generate_greedy

    directory = str(prepare_model("smollm2-135m"))
    _small_cpu_kv_cache()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    chats = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        for prompt in DEMO_PROMPTS
    ]
    llm = LLM(model=directory, enforce_eager=True, dtype="float32", max_model_len=512)
    vllm_outputs = llm.generate(chats, SamplingParams(max_tokens=max_tokens, temperature=0))

    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    depth = model.config.num_hidden_layers
    for prompt, chat, vllm_output in zip(DEMO_PROMPTS, chats, vllm_outputs, strict=True):
        print(f"\n=== {prompt}")
        print(f"  vLLM, full depth ({depth} layers): {vllm_output.outputs[0].text!r}")
        prompt_ids = tokenizer(chat, add_special_tokens=False).input_ids
        for text in DEMO_PROGRAMS:
            program = parse_program(text, depth)
            tokens = generate_greedy(model, prompt_ids, program, max_tokens, tokenizer.eos_token_id)
            generated = tokenizer.decode(tokens, skip_special_tokens=True)
            print(f"  program {text!r} ({len(program)} layers): {generated!r}")


if __name__ == "__main__":
    run_demo()
