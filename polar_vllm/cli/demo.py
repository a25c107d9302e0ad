"""The demo behind ``make demo``: what the shipped predictor buys on Qwen2.5-Coder-0.5B.

Held-out test questions of the generated arithmetic levels 1-3 (never searched, trained or
calibrated on), and questions of a wording family the predictor never saw, run twice in ONE
vLLM batch: at full depth (greedy, ``polar_program: "full"``) and with the program the shipped
predictor picks for each question. A few hand-written programs (a repeated layer, skipped
layers) run in the same batch. The demo prints some questions side by side and one summary
line per group: accuracy and mean executed layers against greedy.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from typing import Any

from polar_vllm.data import answers_match, build_prompt, extract_answer
from polar_vllm.engine.config import PROGRAM_ARG, QUESTION_ARG
from polar_vllm.models.bundled import prepare_model
from polar_vllm.program import format_program, parse_program

DEMO_MODEL = "qwen2.5-coder-0.5b"
"""The bundled model, and the name of its shipped predictor."""
DEMO_LEVELS = (1, 2, 3)
DEMO_HELD_OUT_FAMILIES = ("first_person",)
"""A wording family the predictor never saw (:mod:`polar_vllm.data.wordings`): what it does
on questions worded unlike any it learned from."""
QUESTIONS_PER_LEVEL = 12
SHOWN_PER_LEVEL = 3
MAX_TOKENS = 16
HAND_WRITTEN_PROGRAMS = ("0-5,5-23", "0-11,13-23", "0-9,14-23")
"""Layer 5 run twice (25 layers), layer 12 skipped (23), layers 10-13 skipped (20)."""


@dataclass(frozen=True)
class Answer:
    """One generated answer: its program, text and whether it is right."""

    program: str
    layers: int
    text: str
    right: bool


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


def _test_questions(per_level: int) -> list[Any]:
    """The first ``per_level`` test problems of each demo level, as the evaluation builds them."""
    from polar_vllm.predictor.eval_run import build_items
    from polar_vllm.predictor.run_settings import EvalSettings

    settings = EvalSettings(
        levels=DEMO_LEVELS,
        ood_levels=(),
        count_per_level=per_level,
        ood_families=DEMO_HELD_OUT_FAMILIES,
        family_count_per_level=per_level // 2,
    )
    items, _ = build_items(settings)
    return items


def _answer(output: Any, program: str, depth: int, reference: str) -> Answer:
    text = output.outputs[0].text
    right = answers_match(extract_answer(text), reference)
    return Answer(program, len(parse_program(program, depth)), text.strip(), right)


def _line(label: str, answer: Answer) -> str:
    mark = "right" if answer.right else "wrong"
    return f"  {label:<9} {answer.program:<22} {answer.layers:2d} layers  {mark}: {answer.text!r}"


def run_demo(per_level: int = QUESTIONS_PER_LEVEL, shown_per_level: int = SHOWN_PER_LEVEL) -> None:
    """Run greedy and the shipped predictor side by side on test questions and print them."""
    from vllm import LLM, SamplingParams

    from polar_vllm import polar_program

    items = _test_questions(per_level)
    directory = str(prepare_model(DEMO_MODEL))
    _small_cpu_kv_cache()
    llm = LLM(
        model=directory,
        enforce_eager=True,
        dtype="bfloat16",
        max_model_len=1024,
        additional_config={"polar": {"predictor": DEMO_MODEL}},
    )
    depth = llm.llm_engine.model_config.hf_config.num_hidden_layers
    tokenizer = llm.get_tokenizer()
    questions = [item.problem.question for item in items]
    prompts = [build_prompt(question, tokenizer) for question in questions]
    full = format_program(parse_program("full", depth))

    def params(extra_args: dict[str, Any]) -> SamplingParams:
        return SamplingParams(max_tokens=MAX_TOKENS, temperature=0, extra_args=extra_args)

    # One batch: every question at full depth, every question with the predictor's program
    # (it reads the question, not the chat template), the first one under hand-written programs.
    requests = [(p, params({PROGRAM_ARG: "full"})) for p in prompts]
    requests += [(p, params({QUESTION_ARG: q})) for p, q in zip(prompts, questions, strict=True)]
    requests += [(prompts[0], params({PROGRAM_ARG: h})) for h in HAND_WRITTEN_PROGRAMS]
    outputs = llm.generate([p for p, _ in requests], [s for _, s in requests], use_tqdm=True)
    # The program each predictor request ran: the same front end resolves it the same way.
    pairs = zip(prompts, questions, strict=True)
    chosen = [polar_program(llm, prompt, question=q).text for prompt, q in pairs]

    count = len(items)
    greedy = [
        _answer(o, full, depth, item.problem.answer)
        for o, item in zip(outputs[:count], items, strict=True)
    ]
    polar = [
        _answer(o, program, depth, item.problem.answer)
        for o, program, item in zip(outputs[count : 2 * count], chosen, items, strict=True)
    ]
    print(f"\nPoLar vLLM on {DEMO_MODEL} ({depth} layers) with its shipped predictor;")
    print(f"{len(requests)} requests in one batch, greedy, {MAX_TOKENS} tokens.")
    groups = dict.fromkeys(item.group for item in items)
    for group in groups:
        members = [n for n, item in enumerate(items) if item.group == group]
        for n in members[:shown_per_level]:
            print(f"\n[{group}] {questions[n]}  (answer {items[n].problem.answer})")
            print(_line("greedy", greedy[n]))
            print(_line("PoLar", polar[n]))
    print(f"\nHand-written programs on the first question (answer {items[0].problem.answer}):")
    for output, program in zip(outputs[2 * count :], HAND_WRITTEN_PROGRAMS, strict=True):
        print(_line("program", _answer(output, program, depth, items[0].problem.answer)))
    print(f"\nSummary over {count} test questions, greedy at {depth} layers against PoLar:")
    for group in groups:
        members = [n for n, item in enumerate(items) if item.group == group]
        print(
            f"  {group:<22} greedy {100 * statistics.fmean(greedy[n].right for n in members):5.1f}%"
            f"   PoLar {100 * statistics.fmean(polar[n].right for n in members):5.1f}% at "
            f"{statistics.fmean(polar[n].layers for n in members):.1f} mean layers"
        )


if __name__ == "__main__":
    run_demo()
