"""What a trained predictor buys when served: stock vLLM greedy against PoLar vLLM with the
predictor choosing every request's program, on the same test questions, side by side in one run.

The questions are the evaluation set of a predictor run config (``--config``: the test part of
each level's generated problems and its out-of-distribution files, never trained or calibrated
on). Each variant is one engine given ALL questions in one ``generate`` call, greedy, the
config's ``max_tokens``, every engine with the same KV-cache byte budget (``--kv-cache-gib``):

* ``stock``: vLLM without PoLar (every request runs all D layers);
* ``polar@<point>``: PoLar vLLM with ``additional_config["polar"] = {"predictor": ...,
  "operating_point": point, "scheduling": ...}`` (``--scheduling``, vLLM's order by
  default); the offline path predicts every prompt's program in one batched predictor call
  inside ``generate``, so its time is part of the measured wall time.

Every variant first serves the whole workload ``--warmup-passes`` times untimed (default 1;
its first pass is reported as ``cold_seconds``), then the timed pass: a server serves for
hours, and what a first pass costs once is kernel set-up. On a CPU, vLLM's oneDNN GEMMs build
a primitive for every new row count (about 20 ms each); stock sees a few dozen row counts, a
PoLar batch mixing programs about ten times as many (each partial step runs its own subset of
rows), so a cold pass charges PoLar seconds that a warm server never pays again.

Reported per variant: pass@1 (in-distribution levels pooled, each level, and out of
distribution), mean executed layers, wall seconds, requests/s, generated tokens/s, the ratio of
requests/s to stock's, and the predictor's share of the wall time (the same predictor call
timed on its own). Writes ``benchmarks/results/predictor_payoff/predictor_payoff_<tag>.json``
and ``.png``.

Answers end where the model stops them, so a program that makes the model talk longer costs
decode steps. ``--fixed-length`` makes every answer exactly ``max_tokens`` long in every variant
(``min_tokens``), which isolates what the executed layers buy from what the answers' lengths
cost (its pass@1 is not comparable: answers run past their end of sequence).

    python benchmarks/predictor_payoff.py --config configs/predictor/qwen.yaml --tag cpu_qwen
    python benchmarks/predictor_payoff.py --config configs/predictor/qwen.yaml --fixed-length \
        --tag cpu_qwen_fixed
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from harness import engine_settings, machine_record, write_result

from polar_vllm.compat.shutdown import shutdown_engine
from polar_vllm.data import answers_match, build_prompt, extract_answer
from polar_vllm.engine.config import QUESTION_ARG, SCHEDULING_POLICIES
from polar_vllm.predictor import load_predictor, predict_programs
from polar_vllm.predictor.eval_run import build_items, model_directory
from polar_vllm.predictor.evaluation import EvalItem
from polar_vllm.predictor.run_settings import load_settings

RESULTS = Path(__file__).resolve().parent / "results" / "predictor_payoff"
STOCK = "stock"


def timed_generate(
    llm: Any,
    prompts: list[str],
    questions: list[str],
    max_tokens: int,
    min_tokens: int = 0,
    warmup_passes: int = 1,
) -> tuple[float, float, list[Any]]:
    """Seconds of the first pass (cold), seconds and outputs of the timed greedy ``generate``
    call over every prompt, after ``warmup_passes`` untimed calls over all of them (0: a
    warm-up call on two prompts only, and the timed pass is the cold one). Each request names
    its question (``polar_question``): the predictor reads the question, not the chat template
    around it; stock vLLM ignores the field."""
    from vllm import SamplingParams

    params = [
        SamplingParams(
            max_tokens=max_tokens,
            min_tokens=min_tokens,
            temperature=0,
            extra_args={QUESTION_ARG: q},
        )
        for q in questions
    ]
    llm.generate(prompts[:2], params[:2], use_tqdm=False)
    passes = []
    for _ in range(warmup_passes + 1):
        started = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        passes.append(time.perf_counter() - started)
    return passes[0], passes[-1], outputs


def accuracy(items: list[EvalItem], texts: list[str]) -> dict[str, float]:
    """pass@1 per question group, in-distribution pooled and out of distribution."""
    groups: dict[str, list[bool]] = {}
    for item, text in zip(items, texts, strict=True):
        right = answers_match(extract_answer(text), item.problem.answer)
        for group in (item.group, "ood" if item.ood else "in_distribution"):
            groups.setdefault(group, []).append(right)
    return {group: statistics.fmean(rights) for group, rights in sorted(groups.items())}


def variant_row(
    items: list[EvalItem], timing: tuple[float, float, list[Any]], layers: list[int]
) -> dict[str, Any]:
    """The measured figures of one variant from its :func:`timed_generate` result."""
    cold_seconds, seconds, outputs = timing
    tokens = sum(len(output.outputs[0].token_ids) for output in outputs)
    in_distribution = [n for n, item in zip(layers, items, strict=True) if not item.ood]
    return {
        "cold_seconds": cold_seconds,
        "seconds": seconds,
        "requests": len(outputs),
        "requests_per_s": len(outputs) / seconds,
        "generated_tokens": tokens,
        "generated_tokens_per_s": tokens / seconds,
        "mean_layers": statistics.fmean(in_distribution),
        "mean_layers_all": statistics.fmean(layers),
        "pass@1": accuracy(items, [output.outputs[0].text for output in outputs]),
    }


def plot(results: dict[str, Any], path: Path) -> None:
    """Requests/s against stock and pass@1 of every variant, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["variants"])
    rows = [results["variants"][name] for name in names]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    axes[0].bar(names, [row["ratio_to_stock"] for row in rows])
    axes[0].axhline(1.0, color="grey", linewidth=0.8)
    axes[0].set_ylabel("requests/s, ratio to stock")
    axes[1].bar(names, [row["pass@1"]["in_distribution"] for row in rows])
    axes[1].set_ylabel("pass@1, test levels pooled")
    axes[2].bar(names, [row["mean_layers"] for row in rows])
    axes[2].set_ylabel("mean executed layers")
    for ax in axes:
        ax.tick_params(axis="x", rotation=20)
    fig.suptitle(f"{results['model']}: predictor served against stock vLLM (one run)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run stock and every operating point, print and write the results; returns them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="predictor run YAML (its eval section)")
    parser.add_argument("--points", default=None, help="operating points (default: all)")
    parser.add_argument("--count-per-level", type=int, default=None, help="override the config")
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--kv-cache-gib", type=float, default=4.0, help="KV-cache bytes of every engine, GiB"
    )
    parser.add_argument(
        "--fixed-length", action="store_true", help="every answer exactly max_tokens long"
    )
    parser.add_argument(
        "--warmup-passes",
        type=int,
        default=1,
        help="untimed passes over the whole workload before the timed one (0: time a cold pass)",
    )
    parser.add_argument(
        "--scheduling",
        choices=SCHEDULING_POLICIES,
        default="fcfs",
        help="the PoLar engines' admission order (program_aware: batches share programs)",
    )
    parser.add_argument("--results-dir", default=str(RESULTS))
    parser.add_argument("--tag", default="cpu")
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer
    from vllm import LLM

    settings = load_settings(args.config)
    options = settings.eval
    if args.count_per_level is not None:
        options = dataclasses.replace(options, count_per_level=args.count_per_level)
    model_dir = model_directory(settings.model)
    predictor = load_predictor(settings.predictor_dir)
    points = args.points.split(",") if args.points else sorted(predictor.config.operating_points)
    items, _ = build_items(options)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts = [build_prompt(item.problem.question, tokenizer) for item in items]
    questions = [item.problem.question for item in items]
    engine = engine_settings(model_dir, options.dtype, 1024, args.max_num_seqs, args.seed)
    # One byte budget for every engine, instead of vLLM's share of the machine's memory (on a
    # CPU that share does not fit beside this process).
    os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
    engine["kv_cache_memory_bytes"] = int(args.kv_cache_gib * 2**30)
    min_tokens = options.max_tokens if args.fixed_length else 0

    variants: dict[str, dict[str, Any]] = {}
    generate_args = (prompts, questions, options.max_tokens, min_tokens, args.warmup_passes)
    llm = LLM(**engine)
    depth = int(llm.llm_engine.model_config.hf_config.num_hidden_layers)
    timing = timed_generate(llm, *generate_args)
    shutdown_engine(llm)
    variants[STOCK] = variant_row(items, timing, [depth] * len(items))
    for point in points:
        polar = {
            "predictor": settings.predictor_dir,
            "operating_point": point,
            "scheduling": args.scheduling,
        }
        llm = LLM(**engine, additional_config={"polar": polar})
        timing = timed_generate(llm, *generate_args)
        shutdown_engine(llm)
        at_point = load_predictor(settings.predictor_dir, operating_point=point)
        started = time.perf_counter()
        programs = [ranked[0] for ranked in predict_programs(at_point, questions)]
        predictor_seconds = time.perf_counter() - started
        row = variant_row(items, timing, [len(p) for p in programs])
        row["predictor_seconds"] = predictor_seconds
        row["predictor_share"] = predictor_seconds / row["seconds"]
        variants[f"polar@{point}"] = row
    stock_rate = variants[STOCK]["requests_per_s"]
    stock_cold = variants[STOCK]["cold_seconds"]
    for row in variants.values():
        row["ratio_to_stock"] = row["requests_per_s"] / stock_rate
        row["cold_ratio_to_stock"] = stock_cold / row["cold_seconds"]
    results = {
        "model": settings.model,
        "predictor": Path(settings.predictor_dir).name,
        "command": "python benchmarks/predictor_payoff.py " + " ".join(argv or sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_record(),
        "dtype": options.dtype,
        "max_tokens": options.max_tokens,
        "answer_lengths": "fixed" if args.fixed_length else "model",
        "warmup_passes": args.warmup_passes,
        "scheduling": args.scheduling,
        "kv_cache_gib": args.kv_cache_gib,
        "questions": len(items),
        "depth": depth,
        "variants": variants,
    }
    for name, row in variants.items():
        print(
            f"{name:>18}: pass@1 {100 * row['pass@1']['in_distribution']:5.1f}%  "
            f"layers {row['mean_layers']:5.2f}  {row['requests_per_s']:6.2f} req/s  "
            f"{row['ratio_to_stock']:.2f}x stock (cold pass {row['cold_ratio_to_stock']:.2f}x)"
        )
    out = write_result(results, Path(args.results_dir) / f"predictor_payoff_{args.tag}.json")
    plot(results, out.with_suffix(".png"))
    return results


if __name__ == "__main__":
    main()
