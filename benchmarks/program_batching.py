"""Program-aware admission against vLLM's first-come first-served order, one run.

More requests than the batch holds (``--requests`` > ``--max-num-seqs``), each with one of
``--programs`` seeded random PoLar-form programs, interleaved so that first-come
first-served admission mixes all programs in every batch. Three engines on the same
requests, alternating: stock vLLM (full depth), PoLar with vLLM's order, PoLar with
``scheduling="program_aware"``. Reports generated tokens/s, the ratio to stock and the
ideal ratio (D / mean executed layers). Writes
``benchmarks/results/program_batching_<tag>.json``.

    python benchmarks/program_batching.py            # ~10 min on 2 cores
    python benchmarks/program_batching.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from polar_vllm.bundled import prepare_model
from polar_vllm.data import build_prompt, generate_problems
from polar_vllm.program import format_program
from polar_vllm.program_sets import random_polar_programs

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("stock", "polar_fcfs", "polar_program_aware")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--max-num-seqs", type=int, default=16)
    parser.add_argument("--programs", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="cpu")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="24 requests, batch 4, 8 tokens")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.max_num_seqs, args.max_tokens, args.repeats = 24, 4, 8, 1
        args.tag = "quick"
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison; returns (and writes) the results."""
    args = parse_args(argv)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    model_dir = str(prepare_model("smollm2-135m"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    problems = generate_problems(3, args.requests, args.seed)
    prompts = [build_prompt(problem.question, tokenizer) for problem in problems]
    common = {
        "model": model_dir,
        "dtype": "float32",
        "enforce_eager": True,
        "max_model_len": 512,
        "max_num_seqs": args.max_num_seqs,
        "seed": args.seed,
    }
    engines = {
        "stock": LLM(**common),
        "polar_fcfs": LLM(**common, additional_config={"polar": {}}),
        "polar_program_aware": LLM(
            **common, additional_config={"polar": {"scheduling": "program_aware"}}
        ),
    }
    depth = int(engines["stock"].llm_engine.model_config.hf_config.num_hidden_layers)
    pool = random_polar_programs(depth, args.programs, args.seed)
    programs = [pool[index % len(pool)] for index in range(args.requests)]

    def params(program: Any) -> Any:
        extra = None if program is None else {"polar_program": format_program(program)}
        return SamplingParams(
            max_tokens=args.max_tokens, temperature=0, ignore_eos=True, extra_args=extra
        )

    seconds: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for repeat in tqdm(range(args.repeats), desc="program batching", unit="round"):
        order = VARIANTS if repeat % 2 == 0 else tuple(reversed(VARIANTS))
        for variant in order:
            request_params = [
                params(None if variant == "stock" else program) for program in programs
            ]
            start = time.perf_counter()
            engines[variant].generate(prompts, request_params, use_tqdm=False)
            seconds[variant].append(time.perf_counter() - start)
    tokens = args.requests * args.max_tokens
    rates = {variant: tokens / statistics.median(seconds[variant]) for variant in VARIANTS}
    mean_layers = statistics.fmean(map(len, programs))
    results = {
        "settings": {k: v for k, v in vars(args).items() if k not in {"quick", "results_dir"}},
        "depth": depth,
        "mean_executed_layers": mean_layers,
        "ideal_ratio": depth / mean_layers,
        "tokens_per_s": rates,
        "ratio_to_stock": {variant: rates[variant] / rates["stock"] for variant in VARIANTS},
        "seconds": seconds,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"program_batching_{args.tag}.json"
    path.write_text(json.dumps(results, indent=1))
    print(json.dumps({k: results[k] for k in ("tokens_per_s", "ratio_to_stock", "ideal_ratio")}))
    return results


if __name__ == "__main__":
    main()
