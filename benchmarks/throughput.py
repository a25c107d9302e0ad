"""Generated tokens/s of PoLar vLLM against stock vLLM, side by side in one run.

Two engines live in this process (three with ``--eager-stock-row``): stock vLLM and PoLar vLLM
on the same model and settings, both in vLLM's default compiled mode unless ``--eager``.
For each batch size, the same prompts run through stock vLLM and through PoLar under each
program set, in alternating order, ``--repeats`` times; every request generates exactly
``--max-tokens`` tokens (``ignore_eos``), so all variants do the same number of decode steps.

Program sets (depth D):

* ``full``: every request runs 0..D-1 (PoLar's overhead);
* ``h50``, ``h75``, ``h90``: every request runs one program with 50/75/90% of the layers;
* ``r110``, ``r125``: every request runs one program that repeats 10/25% of the layers;
* ``mixed``: each request draws one of 8 seeded random PoLar-form programs (60-120% of D);
* ``labels``: request i runs the shortest valid program of question i of a search label file
  (``--labels``; questions without a valid program are left out): the heterogeneous mix an
  oracle predictor would send;
* ``predicted``: each request runs the program a trained predictor (``--predictor``) chooses
  for its question.

Reported per (workload, batch size, program set): generated tokens/s, requests/s, mean time
to first token, mean executed layers, KV-cache bytes per request and the ratio to stock's
tokens/s in the same run (median over repeats). Writes
``benchmarks/results/throughput/throughput_<tag>.json`` and ``.png`` (speed-up against mean
executed layers, with the ideal D/layers curve).

    python benchmarks/throughput.py                       # full run (about an hour on 2 cores)
    python benchmarks/throughput.py --quick               # minutes; what CI runs
    python benchmarks/throughput.py --batch-sizes 64 --programs full,h75 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import (
    DTYPE_HELP,
    PROGRAM_SETS,
    RESULTS,
    TARGET_SHARE_OF_IDEAL,
    ProgramSources,
    StartedEngine,
    default_dtype,
    engine_settings,
    machine_record,
    program_set,
    run_device,
    run_once,
    settings_record,
    start_engine,
    workload_prompts,
)
from tqdm import tqdm

from polar_vllm.compat.shutdown import shutdown_engine
from polar_vllm.engine.config import PolarConfig
from polar_vllm.models.bundled import BUNDLED_MODELS, prepare_model
from polar_vllm.predictor import load_predictor
from polar_vllm.search.labels import label_programs

STOCK = "stock"
STOCK_EAGER = "stock-eager"
"""Stock vLLM with ``enforce_eager=True``: an extra row, never the baseline."""


@dataclass
class Measurement:
    """One timed ``generate`` call."""

    workload: str
    batch_size: int
    variant: str
    repeat: int
    seconds: float
    generated_tokens: int
    mean_ttft_s: float
    mean_executed_layers: float
    kv_bytes_per_request: float


def kv_slots(depth: int, loop_layers: str | None) -> int:
    """KV-cache slots per token: one per layer, plus one per extra pass PoLar may run."""
    if loop_layers is None:
        return depth
    config = PolarConfig.from_dict({"loop_layers": loop_layers}, depth)
    return sum(config.slot_passes(layer) for layer in range(depth))


def make_engine(
    model_dir: str, polar: bool, args: argparse.Namespace, eager: bool = False
) -> StartedEngine:
    """A stock or PoLar engine with the benchmark's settings, compiled unless ``eager``."""
    settings = engine_settings(
        model_dir,
        args.dtype,
        1024,
        max(args.batch_sizes),
        args.seed,
        engines_on_device=3 if args.eager_stock_row else 2,
        eager=eager or args.eager,
    )
    if polar:
        settings["additional_config"] = {"polar": {"loop_layers": args.loop_layers}}
    return start_engine(settings)


def summarize(measurements: list[Measurement]) -> list[dict[str, Any]]:
    """Median tokens/s per (workload, batch, variant) and its ratio to stock.

    ``ratios_by_repeat`` holds each repeat's ratio to stock's run of the same repeat, in
    repeat order: their spread shows how much of a ratio is the machine's noise."""
    groups: dict[tuple[str, int, str], list[Measurement]] = {}
    for measurement in measurements:
        key = (measurement.workload, measurement.batch_size, measurement.variant)
        groups.setdefault(key, []).append(measurement)
    stock_seconds_per_token = {
        (run.workload, run.batch_size, run.repeat): run.seconds / run.generated_tokens
        for run in measurements
        if run.variant == STOCK
    }
    rows = []
    for (workload, batch_size, variant), runs in groups.items():
        tokens_per_s = statistics.median(run.generated_tokens / run.seconds for run in runs)
        requests_per_s = statistics.median(batch_size / run.seconds for run in runs)
        rows.append(
            {
                "workload": workload,
                "batch_size": batch_size,
                "variant": variant,
                "tokens_per_s": tokens_per_s,
                "requests_per_s": requests_per_s,
                "mean_ttft_s": statistics.median(run.mean_ttft_s for run in runs),
                "mean_executed_layers": runs[0].mean_executed_layers,
                "kv_bytes_per_request": runs[0].kv_bytes_per_request,
                "repeats": len(runs),
                "ratios_by_repeat": [
                    stock_seconds_per_token[workload, batch_size, run.repeat]
                    * run.generated_tokens
                    / run.seconds
                    for run in sorted(runs, key=lambda run: run.repeat)
                ],
            }
        )
    stock = {
        (row["workload"], row["batch_size"]): row["tokens_per_s"]
        for row in rows
        if row["variant"] == STOCK
    }
    for row in rows:
        row["ratio_to_stock"] = row["tokens_per_s"] / stock[row["workload"], row["batch_size"]]
    return rows


def plot(rows: list[dict[str, Any]], depth: int, path: Path) -> None:
    """Speed-up against stock vs mean executed layers, one line per batch size, with the ideal
    D/layers curve and the issue's 0.9 x ideal target for mixed programs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = sorted({row["workload"] for row in rows})
    figure, axes = plt.subplots(1, len(workloads), figsize=(6 * len(workloads), 4.5), squeeze=False)
    for axis, workload in zip(axes[0], workloads, strict=True):
        polar_rows = [
            r
            for r in rows
            if r["workload"] == workload and r["variant"] not in (STOCK, STOCK_EAGER)
        ]
        layers = sorted({row["mean_executed_layers"] for row in polar_rows})
        ideal_x = [x / 10 for x in range(int(min(layers) * 10), int(max(layers) * 10) + 1)]
        axis.plot(ideal_x, [depth / x for x in ideal_x], "k--", label=f"ideal {depth}/layers")
        axis.plot(
            ideal_x,
            [TARGET_SHARE_OF_IDEAL * depth / x for x in ideal_x],
            color="grey",
            linestyle=":",
            label=f"{TARGET_SHARE_OF_IDEAL} x ideal",
        )
        for batch_size in sorted({row["batch_size"] for row in polar_rows}):
            points = sorted(
                (row["mean_executed_layers"], row["ratio_to_stock"], row["variant"])
                for row in polar_rows
                if row["batch_size"] == batch_size
            )
            axis.plot(
                [p[0] for p in points], [p[1] for p in points], "o-", label=f"batch {batch_size}"
            )
            for x, y, variant in points:
                axis.annotate(
                    variant, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
        axis.axhline(1.0, color="grey", linewidth=0.8)
        axis.set_xlabel("mean executed layers per token")
        axis.set_ylabel("generated tokens/s relative to stock vLLM")
        axis.set_title(f"{workload} workload")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", choices=sorted(BUNDLED_MODELS))
    parser.add_argument("--batch-sizes", default="1,8,32,128")
    parser.add_argument(
        "--programs",
        default=None,
        help="comma-separated program sets (default: all that need no input, plus 'labels' "
        "and 'predicted' when --labels / --predictor are given; --quick: full,h75,mixed)",
    )
    parser.add_argument("--workloads", default="math")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before the repeats")
    parser.add_argument("--dtype", default=None, help=DTYPE_HELP)
    parser.add_argument("--loop-layers", default="all")
    parser.add_argument("--labels", type=Path, help="search label file for the 'labels' set")
    parser.add_argument("--predictor", type=Path, help="predictor dir for the 'predicted' set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--eager-stock-row",
        action="store_true",
        help=f"add stock vLLM with enforce_eager=True as an extra row ({STOCK_EAGER!r})",
    )
    parser.add_argument(
        "--eager",
        action="store_true",
        help="run stock and PoLar eagerly (enforce_eager=True); default: vLLM's compiled mode",
    )
    parser.add_argument("--tag", default=None, help="results file suffix (default: device)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS / "throughput")
    parser.add_argument(
        "--quick", action="store_true", help="tiny run: batch 1,4; 8 tokens; eager (a smoke test)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.max_tokens, args.repeats, args.warmup = "1,4", 8, 1, 0
        args.eager = True
        args.tag = args.tag or "quick"
    args.batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    args.dtype = args.dtype or default_dtype()
    if args.programs is None:
        base = ["full", "h75", "mixed"] if args.quick else list(PROGRAM_SETS[:7])
        base += ["labels"] if args.labels else []
        args.programs = ",".join(base + (["predicted"] if args.predictor else []))
    args.programs = args.programs.split(",")
    args.workloads = args.workloads.split(",")
    unknown = sorted(set(args.programs) - set(PROGRAM_SETS))
    if unknown:
        parser.error(f"unknown program sets {unknown}; known: {PROGRAM_SETS}")
    if "labels" in args.programs and args.labels is None:
        parser.error("program set 'labels' needs --labels FILE")
    if "predicted" in args.programs and args.predictor is None:
        parser.error("program set 'predicted' needs --predictor DIR")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns (and writes) the results."""
    args = parse_args(argv)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
    from transformers import AutoTokenizer

    model_dir = str(prepare_model(args.model))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    started = {STOCK: make_engine(model_dir, polar=False, args=args)}
    if args.eager_stock_row and not args.eager:
        started[STOCK_EAGER] = make_engine(model_dir, polar=False, args=args, eager=True)
    started["polar"] = make_engine(model_dir, polar=True, args=args)
    polar_llm = started["polar"].llm
    depth = int(polar_llm.llm_engine.model_config.hf_config.num_hidden_layers)
    sources = ProgramSources(
        label_programs(args.labels, depth) if args.labels else (),
        load_predictor(args.predictor, expected_depth=depth) if args.predictor else None,
    )
    slots = {STOCK: kv_slots(depth, None), "polar": kv_slots(depth, args.loop_layers)}
    hf_config = polar_llm.llm_engine.model_config.hf_config
    head_dim = hf_config.hidden_size // hf_config.num_attention_heads
    dtype = polar_llm.llm_engine.model_config.dtype
    bytes_per_slot_token = 2 * hf_config.num_key_value_heads * head_dim * dtype.itemsize

    # Warm-up rounds (repeat -1 and below, untimed): every engine first meets the batch's
    # shapes there (oneDNN primitives, compiled code), as a server has long before it is timed.
    plan = [
        (w, b, r)
        for w in args.workloads
        for b in args.batch_sizes
        for r in range(-args.warmup, args.repeats)
    ]
    measurements: list[Measurement] = []
    try:
        for workload, batch_size, repeat in tqdm(plan, desc="throughput", unit="round"):
            prompts, questions = workload_prompts(workload, tokenizer, batch_size, args.seed)
            prompt_tokens = statistics.fmean(len(tokenizer(p).input_ids) for p in prompts)
            tokens_per_request = prompt_tokens + args.max_tokens
            variants = [*(name for name in started if name != "polar"), *args.programs]
            if repeat % 2:
                variants.reverse()  # alternate the order between repeats
            for variant in variants:
                is_stock = variant in started
                engine = started[variant if is_stock else "polar"].llm
                programs = (
                    None if is_stock else program_set(variant, depth, questions, args.seed, sources)
                )
                seconds, tokens, ttft = run_once(engine, prompts, programs, args.max_tokens)
                if repeat < 0:
                    continue
                executed = depth if programs is None else statistics.fmean(map(len, programs))
                kv_slots_used = slots[STOCK] if is_stock else slots["polar"]
                measurements.append(
                    Measurement(
                        workload,
                        batch_size,
                        variant,
                        repeat,
                        seconds,
                        tokens,
                        ttft,
                        executed,
                        kv_slots_used * bytes_per_slot_token * tokens_per_request,
                    )
                )
    finally:
        for engine in started.values():  # now, not at exit: engines may share this process
            shutdown_engine(engine.llm)
    rows = summarize(measurements)
    tag = args.tag or run_device()
    results = {
        "machine": machine_record(),
        "settings": settings_record(args),
        "depth": depth,
        "stock_mode": "eager" if args.eager else "compiled",
        "startup_s": {name: engine.startup_s for name, engine in started.items()},
        "kv_slots": slots,
        "rows": sorted(rows, key=lambda r: (r["workload"], r["batch_size"], r["variant"])),
        "measurements": [asdict(m) for m in measurements],
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"throughput_{tag}.json").write_text(json.dumps(results, indent=1))
    plot(rows, depth, args.results_dir / f"throughput_{tag}.png")
    print_table(results["rows"])
    startup = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in results["startup_s"].items())
    print(f"start-up (cold compile caches): {startup}")
    return results


def print_table(rows: list[dict[str, Any]]) -> None:
    """The summary as a Markdown table."""
    print("| workload | batch | variant | layers | tok/s | ratio to stock | per repeat | TTFT s |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        per_repeat = " / ".join(f"{ratio:.3f}" for ratio in row["ratios_by_repeat"])
        print(
            f"| {row['workload']} | {row['batch_size']} | {row['variant']} | "
            f"{row['mean_executed_layers']:.1f} | {row['tokens_per_s']:.1f} | "
            f"{row['ratio_to_stock']:.3f} | {per_repeat} | {row['mean_ttft_s']:.3f} |"
        )


if __name__ == "__main__":
    main()
