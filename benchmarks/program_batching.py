"""Program-aware admission against vLLM's first-come first-served order, one run.

For each batch size B (``max_num_seqs``), ``--queue-factor`` x B requests wait at once, so the
scheduler chooses which requests share a batch. Each request runs a program of a heterogeneous
mix, interleaved so that first-come first-served admission puts every program of the mix in
every batch:

* ``mixed``: 8 seeded random PoLar-form programs (60-120% of the layers, with loops);
* ``labels``: request i runs the shortest valid program of question i of a search label file
  (``--labels``; by default the label file of the oracle study ``configs/search`` runs for
  ``--model``): the mix an oracle predictor would send, one program per question.

Three engines run the same requests, alternating: stock vLLM (full depth), PoLar in vLLM's
order, and PoLar with ``scheduling="program_aware"``. Reported per (mix, batch size): generated
tokens/s, the ratio to stock, the ideal ratio (D / mean executed layers) and the share of the
ideal each PoLar engine reaches. Writes
``benchmarks/results/program_batching/program_batching_<tag>.json`` and ``.png``.

    python benchmarks/program_batching.py                 # ~40 min on 2 cores
    python benchmarks/program_batching.py --batch-sizes 16 --mixes mixed --repeats 3
    python benchmarks/program_batching.py --model qwen2.5-coder-0.5b --batch-sizes 32 --tag q
    python benchmarks/program_batching.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

from harness import (
    DTYPE_HELP,
    MIXES,
    RESULTS,
    TARGET_SHARE_OF_IDEAL,
    default_dtype,
    engine_settings,
    machine_record,
    mix_programs,
    run_device,
    run_once,
    settings_record,
    study_labels,
)
from tqdm import tqdm

from polar_vllm.compat.shutdown import shutdown_engine
from polar_vllm.data import build_prompt, generate_problems
from polar_vllm.engine.config import DEFAULT_ADMISSION_WINDOW_S, DEFAULT_MAX_DELAY_S
from polar_vllm.models.bundled import BUNDLED_MODELS, prepare_model

VARIANTS = ("stock", "polar_fcfs", "polar_program_aware")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", choices=sorted(BUNDLED_MODELS))
    parser.add_argument("--batch-sizes", default="8,32,128", help="max_num_seqs values")
    parser.add_argument("--queue-factor", type=int, default=4, help="requests per batch slot")
    parser.add_argument(
        "--max-delay-s",
        type=float,
        default=DEFAULT_MAX_DELAY_S,
        help="the program-aware engine's max_delay_s setting",
    )
    parser.add_argument(
        "--admission-window-s",
        type=float,
        default=DEFAULT_ADMISSION_WINDOW_S,
        help="the program-aware engine's admission_window_s setting (0: admit a burst at once)",
    )
    parser.add_argument("--mixes", default="mixed,labels")
    parser.add_argument(
        "--labels", type=Path, help="label file for 'labels' (default: the model's oracle study)"
    )
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", default=None, help=DTYPE_HELP)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default=None, help="results file suffix (default: device)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS / "program_batching")
    parser.add_argument(
        "--eager",
        action="store_true",
        help="run every engine eagerly (enforce_eager=True); default: vLLM's compiled mode",
    )
    parser.add_argument(
        "--quick", action="store_true", help="batch 4, 16 requests, 8 tokens, eager (a smoke test)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.mixes, args.max_tokens, args.repeats = "4", "mixed", 8, 1
        args.tag, args.eager = "quick", True
    args.batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    args.mixes = args.mixes.split(",")
    args.dtype, args.tag = args.dtype or default_dtype(), args.tag or run_device()
    if args.labels is None:
        args.labels = study_labels(args.model)
        if args.labels is None:
            parser.error(f"no oracle study of {args.model} in configs/search; pass --labels")
    unknown = sorted(set(args.mixes) - set(MIXES))
    if unknown:
        parser.error(f"unknown mixes {unknown}; known: {MIXES}")
    return args


def make_engines(
    model_dir: str,
    dtype: str,
    batch_size: int,
    seed: int,
    max_delay_s: float,
    admission_window_s: float,
    eager: bool = False,
) -> dict[str, Any]:
    """Stock, PoLar (vLLM's order) and PoLar (program-aware, passing a waiting request over for
    at most ``max_delay_s``, gathering a burst for at most ``admission_window_s``) engines for
    ``batch_size``."""
    from vllm import LLM

    common = engine_settings(
        model_dir, dtype, 512, batch_size, seed, engines_on_device=3, eager=eager
    )
    return {
        "stock": LLM(**common),
        "polar_fcfs": LLM(**common, additional_config={"polar": {}}),
        "polar_program_aware": LLM(
            **common,
            additional_config={
                "polar": {
                    "scheduling": "program_aware",
                    "max_delay_s": max_delay_s,
                    "admission_window_s": admission_window_s,
                }
            },
        ),
    }


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Share of the ideal ratio per batch size, FCFS against program-aware, one panel per mix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mixes = sorted({row["mix"] for row in rows})
    figure, axes = plt.subplots(1, len(mixes), figsize=(5.5 * len(mixes), 4), squeeze=False)
    for axis, mix in zip(axes[0], mixes, strict=True):
        mix_rows = sorted((r for r in rows if r["mix"] == mix), key=lambda r: r["batch_size"])
        sizes = [str(row["batch_size"]) for row in mix_rows]
        for variant, label in (("polar_fcfs", "vLLM's order"), ("polar_program_aware", "aware")):
            axis.plot(sizes, [r["share_of_ideal"][variant] for r in mix_rows], "o-", label=label)
        axis.axhline(1.0, color="k", linestyle="--", linewidth=0.8, label="ideal D/layers")
        axis.axhline(
            TARGET_SHARE_OF_IDEAL,
            color="grey",
            linestyle=":",
            linewidth=0.8,
            label=f"{TARGET_SHARE_OF_IDEAL} x ideal",
        )
        axis.set_xlabel("batch size (max_num_seqs)")
        axis.set_ylabel("speed-up over stock / ideal speed-up")
        axis.set_title(f"{mix} mix")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison; returns (and writes) the results."""
    args = parse_args(argv)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    from transformers import AutoTokenizer

    model_dir = str(prepare_model(args.model))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = []
    for batch_size in args.batch_sizes:
        requests = args.queue_factor * batch_size
        problems = [
            problem
            for level in range(1, 6)
            for problem in generate_problems(level, (requests + 4) // 5, args.seed + level)
        ][:requests]
        prompts = [build_prompt(problem.question, tokenizer) for problem in problems]
        engines = make_engines(
            model_dir,
            args.dtype,
            batch_size,
            args.seed,
            args.max_delay_s,
            args.admission_window_s,
            args.eager,
        )
        depth = int(engines["stock"].llm_engine.model_config.hf_config.num_hidden_layers)
        plan = [(mix, repeat) for mix in args.mixes for repeat in range(args.repeats)]
        seconds: dict[str, dict[str, list[float]]] = {
            mix: {variant: [] for variant in VARIANTS} for mix in args.mixes
        }
        first_token_s: dict[str, dict[str, list[float]]] = {
            mix: {variant: [] for variant in VARIANTS} for mix in args.mixes
        }
        for mix, repeat in tqdm(plan, desc=f"program batching, batch {batch_size}", unit="round"):
            programs = mix_programs(mix, depth, requests, args)
            for variant in VARIANTS if repeat % 2 == 0 else tuple(reversed(VARIANTS)):
                run_programs = None if variant == "stock" else programs
                elapsed, _, ttft = run_once(
                    engines[variant], prompts, run_programs, args.max_tokens
                )
                seconds[mix][variant].append(elapsed)
                first_token_s[mix][variant].append(ttft)
        for llm in engines.values():
            shutdown_engine(llm)
        for mix in args.mixes:
            programs = mix_programs(mix, depth, requests, args)
            tokens = requests * args.max_tokens
            rates = {v: tokens / statistics.median(seconds[mix][v]) for v in VARIANTS}
            ideal = depth / statistics.fmean(map(len, programs))
            ratios = {variant: rates[variant] / rates["stock"] for variant in VARIANTS}
            rows.append(
                {
                    "mix": mix,
                    "batch_size": batch_size,
                    "requests": requests,
                    "distinct_programs": len(set(programs)),
                    "mean_executed_layers": statistics.fmean(map(len, programs)),
                    "ideal_ratio": ideal,
                    "tokens_per_s": rates,
                    "ratio_to_stock": ratios,
                    "share_of_ideal": {v: ratios[v] / ideal for v in VARIANTS if v != "stock"},
                    "seconds": seconds[mix],
                    "mean_time_to_first_token_s": {
                        variant: statistics.median(first_token_s[mix][variant])
                        for variant in VARIANTS
                    },
                }
            )
    results = {
        "machine": machine_record(),
        "settings": settings_record(args),
        "depth": depth,
        "rows": rows,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"program_batching_{args.tag}.json").write_text(
        json.dumps(results, indent=1)
    )
    plot(rows, args.results_dir / f"program_batching_{args.tag}.png")
    print_table(rows)
    return results


def print_table(rows: list[dict[str, Any]]) -> None:
    """The summary as a Markdown table."""
    print("| mix | batch | requests | ideal | vLLM order | program-aware | share of ideal |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        ratio, share = row["ratio_to_stock"], row["share_of_ideal"]
        print(
            f"| {row['mix']} | {row['batch_size']} | {row['requests']} | "
            f"{row['ideal_ratio']:.3f} | {ratio['polar_fcfs']:.3f} | "
            f"{ratio['polar_program_aware']:.3f} | {share['polar_fcfs']:.2f} -> "
            f"{share['polar_program_aware']:.2f} |"
        )


if __name__ == "__main__":
    main()
