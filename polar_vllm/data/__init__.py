"""Math word-problem data: generated problems, JSONL data sets, prompts and answer checking."""

from polar_vllm.data.answers import (
    answers_match,
    canonical_number,
    extract_answer,
    normalize_number,
)
from polar_vllm.data.generator import (
    DEFAULT_SPLIT,
    GENERATED_SOURCE,
    LEVELS,
    Ref,
    Splits,
    Step,
    WorkedProblem,
    evaluate_steps,
    generate_dataset,
    generate_problems,
    generate_worked_problems,
    split_problems,
)
from polar_vllm.data.jsonl import load_jsonl, save_jsonl
from polar_vllm.data.problems import MathProblem
from polar_vllm.data.prompts import SYSTEM_PROMPT, build_messages, build_prompt

__all__ = [
    "DEFAULT_SPLIT",
    "GENERATED_SOURCE",
    "LEVELS",
    "SYSTEM_PROMPT",
    "MathProblem",
    "Ref",
    "Splits",
    "Step",
    "WorkedProblem",
    "answers_match",
    "build_messages",
    "build_prompt",
    "canonical_number",
    "evaluate_steps",
    "extract_answer",
    "generate_dataset",
    "generate_problems",
    "generate_worked_problems",
    "load_jsonl",
    "normalize_number",
    "save_jsonl",
    "split_problems",
]
