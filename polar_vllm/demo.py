"""The demo behind ``make demo``: vLLM with PoLar on the bundled model, generating for a few
prompts under different layer programs, all in one batch, side by side."""

from __future__ import annotations

import os

from polar_vllm.bundled import prepare_model
from polar_vllm.program import parse_program

DEMO_PROMPTS = (
    "Tom has 7 apples and buys 5 more. How many apples does Tom have now?",
    "The capital of France is",
    "Write a haiku about the sea.",
)
DEMO_PROGRAMS = ("full", "0-9,8-9,10-29", "0-4,8-13,16-21,24-29")


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
    """Start PoLar vLLM and print each prompt's generation under every demo program."""
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    directory = str(prepare_model("smollm2-135m"))
    _small_cpu_kv_cache()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    llm = LLM(
        model=directory,
        enforce_eager=True,
        dtype="float32",
        max_model_len=512,
        additional_config={"polar": {}},
    )
    depth = llm.llm_engine.model_config.hf_config.num_hidden_layers
    chats = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        for prompt in DEMO_PROMPTS
    ]
    requests = [(chat, program) for chat in chats for program in DEMO_PROGRAMS]
    params = [
        SamplingParams(max_tokens=max_tokens, temperature=0, extra_args={"polar_program": program})
        for _, program in requests
    ]
    outputs = iter(llm.generate([chat for chat, _ in requests], params, use_tqdm=False))
    print(f"\nPoLar vLLM on SmolLM2-135M ({depth} layers); all requests ran in one batch.")
    for prompt in DEMO_PROMPTS:
        print(f"\n=== {prompt}")
        for program in DEMO_PROGRAMS:
            layers = len(parse_program(program, depth))
            print(f"  {program!r:>26} ({layers:2d} layers): {next(outputs).outputs[0].text!r}")


if __name__ == "__main__":
    run_demo()
