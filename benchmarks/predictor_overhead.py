"""Per-request predictor overhead in the serving path, and its share of request latency.

Runs the predictor (a trained directory or a shipped predictor's name; a randomly initialised
one for the bundled SmolLM2 when none is given: the cost does not depend on the weights) on
batches of generated math questions and reports the per-request time of each stage (encoder,
head, decoding). With ``--engine`` (the default) the same run also generates 64 tokens per
request for each batch through PoLar vLLM, every request running its predicted program, and
reports the predictor's share of request latency: the predictor runs once per batch before the
batch enters the engine, so every request of the batch waits ``batch predictor time``, and the
share is ``predictor / (predictor + generation)``. Writes JSON under
``benchmarks/results/predictor_overhead/``.

    .venv/bin/python benchmarks/predictor_overhead.py --predictor smollm2-135m
    .venv/bin/python benchmarks/predictor_overhead.py --no-engine --batch-sizes 1,8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from polar_vllm.compat.shutdown import shutdown_engine
from polar_vllm.data import build_prompt, generate_problems
from polar_vllm.models.bundled import prepare_model
from polar_vllm.predictor import init_random_predictor, load_predictor, predict_programs
from polar_vllm.predictor.overhead import measure_overhead
from polar_vllm.program import format_program

RESULTS = Path(__file__).resolve().parent / "results" / "predictor_overhead"


def generation_seconds(
    llm: Any, prompts: list[str], programs: list[str], max_tokens: int, repeats: int
) -> float:
    """Median wall time of generating ``max_tokens`` tokens for every prompt in one batch."""
    from vllm import SamplingParams

    params = [
        SamplingParams(
            max_tokens=max_tokens,
            temperature=0,
            ignore_eos=True,
            extra_args={"polar_program": program},
        )
        for program in programs
    ]
    llm.generate(prompts, params, use_tqdm=False)  # warm-up
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        llm.generate(prompts, params, use_tqdm=False)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predictor", help="predictor dir or shipped name (default: random)")
    parser.add_argument("--model", default="smollm2-135m", help="bundled model")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--engine-repeats", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-engine", dest="engine", action="store_false")
    parser.add_argument(
        "--eager", action="store_true", help="engine with enforce_eager=True (default: compiled)"
    )
    parser.add_argument("--tag", default="cpu")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure and report the predictor's per-request overhead; returns the report."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.predictor or init_random_predictor(scratch, args.model, 30)
        predictor = load_predictor(directory, device=args.device)
    questions = [p.question for level in (1, 3, 5) for p in generate_problems(level, 64, seed=7)]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    llm = tokenizer = None
    if args.engine:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        from vllm import LLM

        llm = LLM(
            model=str(prepare_model(args.model)),
            additional_config={"polar": {}},
            enforce_eager=args.eager,
            dtype="float32",
            max_model_len=1024,
        )
        tokenizer = llm.get_tokenizer()
    rows = []
    for batch_size in batch_sizes:
        batch = questions[:batch_size]
        row = measure_overhead(predictor, batch, top_k=args.top_k, repeats=args.repeats)
        line = (
            f"batch {batch_size:3d}: encoder {row['encoder_ms']:.2f} ms, head "
            f"{row['head_ms']:.2f} ms, decoding {row['decoding_ms']:.2f} ms, total "
            f"{row['total_ms']:.2f} ms per request"
        )
        if llm is not None:
            programs = [format_program(p[0]) for p in predict_programs(predictor, batch, 1)]
            prompts = [build_prompt(question, tokenizer) for question in batch]
            seconds = generation_seconds(
                llm, prompts, programs, args.max_tokens, args.engine_repeats
            )
            predictor_s = row["total_ms"] * batch_size / 1000
            row["generation_s"] = seconds
            row["share_of_latency"] = predictor_s / (predictor_s + seconds)
            line += f"; generation {seconds:.2f} s, share {100 * row['share_of_latency']:.2f}%"
        rows.append(row)
        print(line)
    report = {
        "predictor": str(args.predictor) if args.predictor else f"random {args.model}",
        "depth": predictor.config.depth,
        "encoder": predictor.config.encoder,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "max_tokens": args.max_tokens,
        "rows": rows,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"predictor_overhead_{args.tag}.json"
    out.write_text(json.dumps(report, indent=1))
    print(out)
    if llm is not None:
        shutdown_engine(llm)
    return report


if __name__ == "__main__":
    main()
