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

Each operating point is measured beside its own stock engine, the two alive together (three
engines do not fit a 24 GB machine). Each engine first serves the whole workload
``--warmup-passes`` times untimed (default 1; its first pass is reported as ``cold_seconds``):
a server serves for hours, and what a first pass costs once is kernel set-up. On a CPU, vLLM's
oneDNN GEMMs build a primitive for every new row count (about 20 ms each); stock sees a few
dozen row counts, a PoLar batch mixing programs about ten times as many (each partial step runs
its own subset of rows), so a cold pass charges PoLar seconds that a warm server never pays
again. Then ``--rounds`` rounds (default 4) each time one pass of both engines, alternating
which goes first; the point's ratio to stock is the median over rounds of the round's ratio,
so a drift of the machine's speed between passes (up to 20% on a shared 2-core machine) does
not decide it. The stock row pools the stock passes of every pair.

Reported per variant: pass@1 (in-distribution levels pooled, each level, and out of
distribution), mean executed layers, the median seconds of a pass, requests/s, generated
tokens/s, the ratio of requests/s to stock's (and each round's), the ideal ratio of the
layer-token cost model (:mod:`~polar_vllm.predictor.served_cost`: layers times tokens, plus
the LM head per generated token) and the share of it the engine kept, and the predictor's
share of the wall time (the same predictor call timed on its own). Writes
``benchmarks/results/predictor_payoff/predictor_payoff_<tag>.json`` and ``.png``.

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

from harness import engine_settings, machine_record, start_engine, write_result
from tqdm import tqdm

from polar_vllm.compat.shutdown import shutdown_engine
from polar_vllm.data import answers_match, build_prompt, extract_answer
from polar_vllm.engine.config import QUESTION_ARG, SCHEDULING_POLICIES
from polar_vllm.models.bundled import resolve_model
from polar_vllm.predictor import load_predictor, predict_programs
from polar_vllm.predictor.eval_run import build_items
from polar_vllm.predictor.evaluation import EvalItem
from polar_vllm.predictor.run_settings import load_settings
from polar_vllm.predictor.served_cost import head_layers, workload_cost

RESULTS = Path(__file__).resolve().parent / "results" / "predictor_payoff"
STOCK = "stock"


def sampling_params(questions: list[str], max_tokens: int, min_tokens: int = 0) -> list[Any]:
    """Greedy sampling parameters of every request. Each request names its question
    (``polar_question``): the predictor reads the question, not the chat template around it;
    stock vLLM ignores the field."""
    from vllm import SamplingParams

    return [
        SamplingParams(
            max_tokens=max_tokens,
            min_tokens=min_tokens,
            temperature=0,
            extra_args={QUESTION_ARG: q},
        )
        for q in questions
    ]


def timed_pass(llm: Any, prompts: list[str], params: list[Any]) -> tuple[float, list[Any]]:
    """Seconds and outputs of one ``generate`` call over every prompt."""
    started = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    return time.perf_counter() - started, outputs


@dataclasses.dataclass(frozen=True)
class Passes:
    """One engine's passes over the workload: the first (cold) one's seconds, the timed
    rounds' seconds and the last pass's outputs."""

    cold_seconds: float
    seconds_by_round: list[float]
    outputs: list[Any]


def measure(
    engines: dict[str, Any],
    prompts: list[str],
    params: list[Any],
    warmup_passes: int,
    rounds: int,
) -> dict[str, Passes]:
    """Warm every engine up (``warmup_passes`` passes, the first one timed as cold), then time
    ``rounds`` rounds of one pass each, the engines' order rotating between rounds."""
    cold: dict[str, float] = {}
    for name, llm in engines.items():
        llm.generate(prompts[:2], params[:2], use_tqdm=False)
        cold[name], _ = timed_pass(llm, prompts, params)
        for _ in range(warmup_passes - 1):
            timed_pass(llm, prompts, params)
    names = list(engines)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, list[Any]] = {}
    for index in range(rounds):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            elapsed, outputs[name] = timed_pass(engines[name], prompts, params)
            seconds[name].append(elapsed)
    return {name: Passes(cold[name], seconds[name], outputs[name]) for name in names}


def accuracy(items: list[EvalItem], texts: list[str]) -> dict[str, float]:
    """pass@1 per question group, in-distribution pooled and out of distribution."""
    groups: dict[str, list[bool]] = {}
    for item, text in zip(items, texts, strict=True):
        right = answers_match(extract_answer(text), item.problem.answer)
        for group in (item.group, "ood" if item.ood else "in_distribution"):
            groups.setdefault(group, []).append(right)
    return {group: statistics.fmean(rights) for group, rights in sorted(groups.items())}


def variant_row(
    items: list[EvalItem], passes: Passes, layers: list[int], head: float
) -> dict[str, Any]:
    """The measured figures of one variant: its passes and each request's executed layers
    (``head``: the LM head in layers, for the layer-token cost of
    :mod:`~polar_vllm.predictor.served_cost`)."""
    outputs, seconds_by_round = passes.outputs, passes.seconds_by_round
    seconds = statistics.median(seconds_by_round)
    generated = [len(output.outputs[0].token_ids) for output in outputs]
    prompt_tokens = [len(output.prompt_token_ids) for output in outputs]
    in_distribution = [n for n, item in zip(layers, items, strict=True) if not item.ood]
    return {
        "cold_seconds": passes.cold_seconds,
        "seconds": seconds,
        "seconds_by_round": seconds_by_round,
        "requests": len(outputs),
        "requests_per_s": len(outputs) / seconds,
        "generated_tokens": sum(generated),
        "generated_tokens_per_s": sum(generated) / seconds,
        "layer_tokens": workload_cost(layers, prompt_tokens, generated, head),
        "mean_layers": statistics.fmean(in_distribution),
        "mean_layers_all": statistics.fmean(layers),
        "pass@1": accuracy(items, [output.outputs[0].text for output in outputs]),
    }


def compare_to_stock(row: dict[str, Any], stock: dict[str, Any]) -> None:
    """Add to a variant's ``row`` its requests/s ratio to ``stock``, the stock engine measured
    beside it (the median over rounds of the round's ratio), its cold-pass ratio, the ideal
    ratio of the layer-token model (stock's layer-tokens over the variant's) and the share of
    that ideal the engine kept."""
    by_round = [
        theirs / ours
        for theirs, ours in zip(stock["seconds_by_round"], row["seconds_by_round"], strict=True)
    ]
    row["ratios_by_round"] = by_round
    row["ratio_to_stock"] = statistics.median(by_round)
    row["cold_ratio_to_stock"] = stock["cold_seconds"] / row["cold_seconds"]
    row["ideal_ratio"] = stock["layer_tokens"] / row["layer_tokens"]
    row["share_of_ideal"] = row["ratio_to_stock"] / row["ideal_ratio"]


def plot(results: dict[str, Any], path: Path) -> None:
    """Requests/s against stock and pass@1 of every variant, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["variants"])
    rows = [results["variants"][name] for name in names]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    axes[0].bar(names, [row["ratio_to_stock"] for row in rows], label="measured (median)")
    axes[0].scatter(
        names,
        [row["ideal_ratio"] for row in rows],
        color="black",
        marker="_",
        s=400,
        label="ideal (layer-tokens)",
        zorder=3,
    )
    axes[0].axhline(1.0, color="grey", linewidth=0.8)
    axes[0].legend(loc="lower left", fontsize=8)
    axes[0].set_ylabel("requests/s, ratio to stock")
    axes[1].bar(names, [row["pass@1"]["in_distribution"] for row in rows])
    axes[1].set_ylabel("pass@1, test levels pooled")
    axes[2].bar(names, [row["mean_layers"] for row in rows])
    axes[2].set_ylabel("mean executed layers")
    for ax in axes:
        ax.tick_params(axis="x", rotation=20)
    fig.suptitle(
        f"{results['model']}: predictor served against stock vLLM "
        f"({results['rounds']} interleaved rounds)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run stock and every operating point, print and write the results; returns them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="predictor run YAML (its eval section)")
    parser.add_argument("--points", default=None, help="operating points (default: all)")
    parser.add_argument("--count-per-level", type=int, default=None, help="override the config")
    parser.add_argument(
        "--family-count-per-level", type=int, default=None, help="override the config"
    )
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--kv-cache-gib", type=float, default=2.0, help="KV-cache bytes of every engine, GiB"
    )
    parser.add_argument(
        "--fixed-length", action="store_true", help="every answer exactly max_tokens long"
    )
    parser.add_argument(
        "--warmup-passes",
        type=int,
        default=1,
        help="passes over the whole workload before the timed rounds (the first is reported)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="timed passes of each engine pair, alternating (even: each goes first in half)",
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
    if args.warmup_passes < 1 or args.rounds < 1:
        parser.error("--warmup-passes and --rounds must be at least 1")

    from transformers import AutoTokenizer

    settings = load_settings(args.config)
    options = settings.eval
    if args.count_per_level is not None:
        options = dataclasses.replace(options, count_per_level=args.count_per_level)
    if args.family_count_per_level is not None:
        options = dataclasses.replace(options, family_count_per_level=args.family_count_per_level)
    model_dir = resolve_model(settings.model)
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

    # Each operating point is measured beside its own stock engine, both alive through
    # rounds that alternate which goes first, so a ratio compares passes a minute apart rather
    # than passes taken after the machine's speed drifted. (Two engines at a time: three do not
    # fit a 24 GB machine beside this process.)
    params = sampling_params(questions, options.max_tokens, min_tokens)
    pairs: dict[str, dict[str, Passes]] = {}
    startup_s: dict[str, float] = {}
    for point in tqdm(points, desc="operating points"):
        polar = {
            "predictor": settings.predictor_dir,
            "operating_point": point,
            "scheduling": args.scheduling,
        }
        started = {
            STOCK: start_engine(engine),
            f"polar@{point}": start_engine({**engine, "additional_config": {"polar": polar}}),
        }
        startup_s[f"stock (beside {point})"] = started[STOCK].startup_s
        startup_s[f"polar@{point}"] = started[f"polar@{point}"].startup_s
        engines = {name: handle.llm for name, handle in started.items()}
        hf_config = engines[STOCK].llm_engine.model_config.hf_config
        pairs[f"polar@{point}"] = measure(engines, prompts, params, args.warmup_passes, args.rounds)
        for llm in engines.values():
            shutdown_engine(llm)

    head = head_layers(hf_config)
    depth = int(hf_config.num_hidden_layers)
    stock_passes = [pair[STOCK] for pair in pairs.values()]
    variants = {
        STOCK: variant_row(
            items,
            Passes(
                statistics.median(p.cold_seconds for p in stock_passes),
                [seconds for p in stock_passes for seconds in p.seconds_by_round],
                stock_passes[0].outputs,
            ),
            [depth] * len(items),
            head,
        )
    }
    for name, pair in pairs.items():
        at_point = load_predictor(settings.predictor_dir, operating_point=name.split("@")[1])
        started = time.perf_counter()
        layers = [len(ranked[0]) for ranked in predict_programs(at_point, questions)]
        predictor_seconds = time.perf_counter() - started
        row = variant_row(items, pair[name], layers, head)
        row["predictor_seconds"] = predictor_seconds
        row["predictor_share"] = predictor_seconds / row["seconds"]
        stock = variant_row(items, pair[STOCK], [depth] * len(items), head)
        compare_to_stock(row, stock)
        variants[name] = row
    compare_to_stock(variants[STOCK], variants[STOCK])
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
        "rounds": args.rounds,
        "head_layers": head,
        "scheduling": args.scheduling,
        "kv_cache_gib": args.kv_cache_gib,
        "stock_mode": "compiled",
        "startup_s": startup_s,
        "questions": len(items),
        "depth": depth,
        "variants": variants,
    }
    for name, row in variants.items():
        print(
            f"{name:>18}: pass@1 {100 * row['pass@1']['in_distribution']:5.1f}%  "
            f"layers {row['mean_layers']:5.2f}  {row['requests_per_s']:6.2f} req/s  "
            f"{row['ratio_to_stock']:.2f}x stock (ideal {row['ideal_ratio']:.2f}x, cold pass "
            f"{row['cold_ratio_to_stock']:.2f}x)"
        )
    out = write_result(results, Path(args.results_dir) / f"predictor_payoff_{args.tag}.json")
    plot(results, out.with_suffix(".png"))
    return results


if __name__ == "__main__":
    main()
