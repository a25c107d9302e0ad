"""What the merged schedule of a mixed batch costs in vLLM's own layers, weight reads included.

A decode forward of a batch that mixes programs runs one merged schedule: one layer call per
schedule step, each on the rows that run that step (see ``polar_vllm/executor/schedule.py``).
A layer call reads all of its layer's weights however few rows it runs, so at decode batch
sizes a step on a few rows costs much of what a step on the whole batch costs, and a mix whose
schedule is longer than the model is deep can fall short of its ideal speed-up
(D / mean executed layers) whatever the engine does around the layer calls.

This script measures, inside a stock vLLM engine (``LLM.apply_model``), what one decoder layer's
weight-bound work costs on n rows, streaming through all layers so that each call finds its
weights in memory, not in the CPU caches, as a forward does: the two norms, the QKV and output
projections and the MLP (attention and rotary, per-row work that no weights back, are left out).
With that per-call cost c(n) it prices the merged schedule of each mix at each batch size B,
sum over steps of c(rows of the step), against the full program's D x c(B), and reports the
speed-up and share of ideal that the schedule alone allows for decode: for a batch of B
requests of the mix, and (``--queue-factors``) for q x B requests waiting at once, batched by
program-aware admission (``polar_vllm/engine/batching.py``). It also reports the
bytes of weights per layer and the machine's memory read bandwidth, whose quotient is the
floor of c(n).

    python benchmarks/layer_call_cost.py                   # ~1 min on 2 cores
    python benchmarks/layer_call_cost.py --model qwen2.5-coder-0.5b --tag qwen
    python benchmarks/layer_call_cost.py --quick

Writes ``benchmarks/results/layer_call_cost/layer_call_cost_<tag>.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
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
    settings_record,
    study_labels,
)
from tqdm import tqdm

from polar_vllm.compat.shutdown import shutdown_engine
from polar_vllm.engine.batching import program_aware_order
from polar_vllm.executor.schedule import merge_programs, schedule_lower_bound
from polar_vllm.models.bundled import BUNDLED_MODELS, prepare_model
from polar_vllm.predictor.served_cost import layer_weight_bytes
from polar_vllm.program import Program, full_program
from polar_vllm.program.families import homogeneous_program

PROGRAM_MIXES = ("full", "h75", *MIXES)
QUEUE_LINE_STYLES = ("o-", "s--", "^-.", "D:", "v--")
"""Line style per queue factor in the plot, in the order the factors were asked for."""
STREAM_BYTES = 256 * 2**20
"""Size of the buffer read to measure memory bandwidth: far larger than any CPU cache."""


def time_layer_calls(model: Any, rows: int, repeats: int) -> float:
    """Milliseconds per decoder layer of the weight-bound work on ``rows`` rows.

    Runs in the engine's worker (``LLM.apply_model``). Every repeat calls the norms, projections
    and MLP of all decoder layers in order, so each layer's weights come from memory, not from
    the CPU caches; the result is the median over repeats of the total / layers (after one
    warm-up pass).
    """
    import torch

    layers = list(model.model.layers)
    attention = layers[0].self_attn
    parameter = next(model.parameters())
    kind = {"dtype": parameter.dtype, "device": parameter.device}
    synchronize = torch.cuda.synchronize if parameter.device.type == "cuda" else lambda: None
    states = torch.randn(rows, attention.qkv_proj.input_size, **kind)
    heads = torch.randn(rows, attention.o_proj.input_size, **kind)
    totals = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            for layer in layers:
                normed, residual = layer.input_layernorm(states.clone(), states.clone())
                layer.self_attn.qkv_proj(normed)
                layer.self_attn.o_proj(heads)
                normed, residual = layer.post_attention_layernorm(normed, residual)
                layer.mlp(normed)
            synchronize()
            totals.append(time.perf_counter() - start)
    return statistics.median(totals[1:]) / len(layers) * 1e3


def read_bandwidth_gbps(model: Any) -> float:
    """GB/s the engine's worker reads when summing a buffer of :data:`STREAM_BYTES`."""
    import torch

    device = next(model.parameters()).device
    buffer = torch.ones(STREAM_BYTES // 4, dtype=torch.float32, device=device)
    seconds = []
    for _ in range(4):
        start = time.perf_counter()
        buffer.sum().item()  # .item() waits for the read on any device
        seconds.append(time.perf_counter() - start)
    return STREAM_BYTES / statistics.median(seconds[1:]) / 1e9


def cost_of_rows(per_layer_ms: dict[int, float]) -> Callable[[float], float]:
    """c(n): the measured per-layer cost, linear between measured row counts and beyond them."""
    rows = np.array(sorted(per_layer_ms), dtype=float)
    ms = np.array([per_layer_ms[int(n)] for n in rows])

    def cost(n: float) -> float:
        if len(rows) == 1:
            return float(ms[0])
        if n > rows[-1]:  # extend the last segment
            slope = (ms[-1] - ms[-2]) / (rows[-1] - rows[-2])
            return float(ms[-1] + slope * (n - rows[-1]))
        return float(np.interp(n, rows, ms))

    return cost


def schedule_estimate(
    programs: Sequence[Program], depth: int, cost: Callable[[float], float]
) -> dict[str, Any]:
    """The merged schedule of one decode batch (one token per program) priced with ``cost``.

    Returns the schedule length and its lower bound, the mean executed layers, the ideal
    speed-up D / mean layers, the estimated decode forward (sum of ``cost(rows)`` over steps)
    against the full program's ``depth * cost(batch)``, their ratio and its share of the ideal.
    """
    counts = Counter(tuple(program) for program in programs)
    distinct = tuple(counts)
    schedule = merge_programs(distinct)
    step_rows = [sum(counts[distinct[group]] for group in step.groups) for step in schedule.steps]
    estimate_ms = sum(cost(rows) for rows in step_rows)
    full_ms = depth * cost(len(programs))
    mean_layers = statistics.fmean(map(len, programs))
    ideal = depth / mean_layers
    speedup = full_ms / estimate_ms
    return {
        "distinct_programs": len(distinct),
        "schedule_steps": len(schedule),
        "schedule_lower_bound": schedule_lower_bound(distinct),
        "mean_step_rows": statistics.fmean(step_rows),
        "mean_executed_layers": mean_layers,
        "ideal_speedup": ideal,
        "decode_forward_ms": estimate_ms,
        "full_decode_forward_ms": full_ms,
        "speedup": speedup,
        "share_of_ideal": speedup / ideal,
    }


def admitted_batches(programs: Sequence[Program], batch_size: int) -> list[list[Program]]:
    """The decode batches program-aware admission forms when ``programs`` all wait at once.

    Requests arrive in list order and all generate the same number of tokens, so each batch is
    admitted whole when the previous one finishes; no request becomes overdue
    (:func:`polar_vllm.engine.batching.program_aware_order` with no delay bound).
    """
    waiting = list(range(len(programs)))
    batches = []
    while waiting:
        order = program_aware_order(
            waiting, [], programs.__getitem__, float, 0.0, math.inf, batch_size
        )
        admitted = order[:batch_size]
        batches.append([programs[index] for index in admitted])
        waiting = sorted(order[batch_size:])  # arrival order
    return batches


def queue_estimate(
    programs: Sequence[Program], batch_size: int, depth: int, cost: Callable[[float], float]
) -> dict[str, Any]:
    """:func:`schedule_estimate` over the batches :func:`admitted_batches` forms.

    Forward times are summed over the batches (each decodes the same number of tokens), so the
    speed-up and share of ideal are the whole queue's; schedule lengths, their lower bounds,
    distinct programs and mean step rows are means over the batches.
    """
    per_batch = [
        schedule_estimate(batch, depth, cost) for batch in admitted_batches(programs, batch_size)
    ]
    estimate_ms = sum(batch["decode_forward_ms"] for batch in per_batch)
    full_ms = sum(batch["full_decode_forward_ms"] for batch in per_batch)
    mean_layers = statistics.fmean(map(len, programs))
    speedup = full_ms / estimate_ms
    means = ("distinct_programs", "schedule_steps", "schedule_lower_bound", "mean_step_rows")
    return {
        "batches": len(per_batch),
        **{key: statistics.fmean(batch[key] for batch in per_batch) for key in means},
        "mean_executed_layers": mean_layers,
        "ideal_speedup": depth / mean_layers,
        "decode_forward_ms": estimate_ms,
        "full_decode_forward_ms": full_ms,
        "speedup": speedup,
        "share_of_ideal": speedup * mean_layers / depth,
    }


def mix_of(name: str, depth: int, count: int, args: argparse.Namespace) -> list[Program]:
    """The programs of ``count`` requests under program mix ``name``."""
    if name == "full":
        return [full_program(depth)] * count
    if name == "h75":
        return [homogeneous_program(depth, 0.75)] * count
    return mix_programs(name, depth, count, args)


def plot(results: dict[str, Any], path: Path) -> None:
    """Left: per-layer cost against rows, with the weight-read floor. Right: the share of ideal
    each mix's schedule allows, per batch size, with the 0.9 x ideal target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (cost_axis, share_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    per_layer = {int(n): ms for n, ms in results["per_layer_ms"].items()}
    rows = sorted(per_layer)
    cost_axis.plot(rows, [per_layer[n] for n in rows], "o-", label="norms + projections + MLP")
    cost_axis.axhline(
        results["weight_read_floor_ms"], color="grey", linestyle=":", label="weights / bandwidth"
    )
    cost_axis.set_xscale("log", base=2)
    cost_axis.set_xlabel("rows in the layer call")
    cost_axis.set_ylabel("ms per decoder layer")
    cost_axis.set_title("one layer call, weights from memory")
    cost_axis.legend(fontsize=8)
    mixes = list(dict.fromkeys(row["mix"] for row in results["rows"]))
    for color, mix in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], mixes, strict=False):
        mix_rows = [row for row in results["rows"] if row["mix"] == mix]
        homogeneous = all(row["distinct_programs"] == 1 for row in mix_rows)
        factors = dict.fromkeys(row["queue_factor"] for row in mix_rows)
        for factor, style in zip(factors, itertools.cycle(QUEUE_LINE_STYLES)):
            if homogeneous and factor > 1:
                continue  # one program: admission has nothing to choose
            queue_rows = [row for row in mix_rows if row["queue_factor"] == factor]
            share_axis.plot(
                [str(row["batch_size"]) for row in queue_rows],
                [row["share_of_ideal"] for row in queue_rows],
                style,
                color=color,
                label=mix if factor == 1 else f"{mix}, {factor} x batch waiting, program-aware",
            )
    share_axis.axhline(1.0, color="k", linestyle="--", linewidth=0.8, label="ideal D/layers")
    share_axis.axhline(
        TARGET_SHARE_OF_IDEAL, color="grey", linestyle=":", label=f"{TARGET_SHARE_OF_IDEAL} x ideal"
    )
    share_axis.set_xlabel("decode batch size")
    share_axis.set_ylabel("schedule's speed-up / ideal speed-up")
    share_axis.set_title("decode forward priced by its merged schedule")
    share_axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", choices=sorted(BUNDLED_MODELS))
    parser.add_argument("--row-counts", default="1,2,4,8,16,32,64,128,256")
    parser.add_argument("--batch-sizes", default="8,32,128", help="decode batches to price")
    parser.add_argument(
        "--queue-factors",
        default="1,8",
        help="requests waiting per batch slot; above 1, batches are formed by program-aware "
        "admission",
    )
    parser.add_argument("--mixes", default=",".join(PROGRAM_MIXES))
    parser.add_argument(
        "--labels", type=Path, help="label file for 'labels' (default: the model's oracle study)"
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtype", default=None, help=DTYPE_HELP)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default=None, help="results file suffix (default: device)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS / "layer_call_cost")
    parser.add_argument(
        "--quick", action="store_true", help="rows 1,4; batch 4; queues 1,2; 2 repeats"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.row_counts, args.batch_sizes, args.repeats = "1,4", "4", 2
        args.queue_factors, args.mixes, args.tag = "1,2", "full,h75,mixed", "quick"
    args.batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    args.dtype, args.tag = args.dtype or default_dtype(), args.tag or run_device()
    args.queue_factors = [int(factor) for factor in args.queue_factors.split(",")]
    # The full program's steps run the whole batch: measure c(B) itself, never extrapolate it.
    args.row_counts = sorted({*map(int, args.row_counts.split(",")), *args.batch_sizes})
    args.mixes = args.mixes.split(",")
    unknown = sorted(set(args.mixes) - set(PROGRAM_MIXES))
    if unknown:
        parser.error(f"unknown mixes {unknown}; known: {PROGRAM_MIXES}")
    if "labels" in args.mixes and args.labels is None:
        args.labels = study_labels(args.model)
        if args.labels is None:
            parser.error(f"no oracle study of {args.model} in configs/search; pass --labels")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure the per-layer cost, price every mix's schedule; returns (and writes) the results."""
    args = parse_args(argv)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    # apply_model() ships the timing function to the engine process, which needs pickling.
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
    from vllm import LLM

    model_dir = str(prepare_model(args.model))
    # Eager: the benchmark calls vLLM's layers one by one, outside any compiled code, so it
    # prices them with the kernels an eager engine picks.
    settings = engine_settings(model_dir, args.dtype, 512, max(args.batch_sizes), args.seed)
    llm = LLM(**{**settings, "enforce_eager": True})
    model_config = llm.llm_engine.model_config
    depth = int(model_config.hf_config.num_hidden_layers)
    try:
        # Partials are pickled by reference: the engine's processes import this module by name.
        per_layer_ms = {
            rows: llm.apply_model(
                functools.partial(time_layer_calls, rows=rows, repeats=args.repeats)
            )[0]
            for rows in tqdm(args.row_counts, desc="layer calls", unit="row count")
        }
        (read_gbps,) = llm.apply_model(functools.partial(read_bandwidth_gbps))
    finally:
        shutdown_engine(llm)
    weight_bytes = layer_weight_bytes(model_config.hf_config, model_config.dtype.itemsize)
    cost = cost_of_rows(per_layer_ms)
    rows = [
        {
            "mix": mix,
            "batch_size": size,
            "queue_factor": factor,
            **queue_estimate(mix_of(mix, depth, factor * size, args), size, depth, cost),
        }
        for mix in args.mixes
        for size in args.batch_sizes
        for factor in args.queue_factors
    ]
    results = {
        "machine": machine_record(),
        "settings": settings_record(args),
        "depth": depth,
        "layer_weight_bytes": weight_bytes,
        "read_gbps": read_gbps,
        "weight_read_floor_ms": weight_bytes / read_gbps / 1e6,
        "per_layer_ms": {str(n): ms for n, ms in sorted(per_layer_ms.items())},
        "rows": rows,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"layer_call_cost_{args.tag}.json").write_text(
        json.dumps(results, indent=1)
    )
    plot(results, args.results_dir / f"layer_call_cost_{args.tag}.png")
    print_tables(results)
    return results


def print_tables(results: dict[str, Any]) -> None:
    """The per-layer costs and the priced schedules as Markdown tables."""
    print(
        f"weights per layer {results['layer_weight_bytes'] / 2**20:.1f} MiB, memory read "
        f"{results['read_gbps']:.1f} GB/s: floor {results['weight_read_floor_ms']:.3f} ms"
    )
    print("| rows | ms per layer |\n|---|---|")
    for rows, ms in results["per_layer_ms"].items():
        print(f"| {rows} | {ms:.3f} |")
    print("| mix | batch | queue | steps (bound) | rows/step | layers | ideal | speed-up | share |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in results["rows"]:
        print(
            f"| {row['mix']} | {row['batch_size']} | {row['queue_factor']} x | "
            f"{row['schedule_steps']:.1f} ({row['schedule_lower_bound']:.1f}) | "
            f"{row['mean_step_rows']:.1f} | "
            f"{row['mean_executed_layers']:.1f} | {row['ideal_speedup']:.3f}x | "
            f"{row['speedup']:.3f}x | {row['share_of_ideal']:.3f} |"
        )


if __name__ == "__main__":
    main()
