"""KV capacity by program: stock vLLM against PoLar programs on a KV-bound workload, one run.

Long prompts (the ``long`` workload of ``throughput.py``: ~400-token documents), many more
requests than the KV budget holds, and a small budget given in stock-vLLM tokens
(``--kv-tokens``: the same bytes for every engine). PoLar gives a request KV blocks only in the
KV-cache groups its program enters (``kv_group_layers`` layers of one pass per group), so a
program that skips layers holds more requests in the same bytes. Variants: ``stock``, and the
PoLar program sets ``full``, ``h75`` (a quarter of the layers skipped), ``r110`` (a tenth of the
layers run twice: the looping program, which also takes pass-2 blocks) and ``labels`` (the
oracle-label mix of a search label file), as ``throughput.py`` builds them.

Each engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so its scheduler can be
read between steps. Reported per variant: generated tokens/s, the most requests running at
once, preemptions, the KV capacity in tokens for the variant's programs (the engine's block pool
times block size over the groups a request enters), and the ratios to stock. Writes
``benchmarks/results/kv_capacity/kv_capacity_<tag>.json`` and ``.png``.

    python benchmarks/kv_capacity.py
    python benchmarks/kv_capacity.py --requests 96 --kv-tokens 8192 --model qwen2.5-coder-0.5b
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from harness import (
    DTYPE_HELP,
    PROGRAM_SETS,
    REPOSITORY,
    RESULTS,
    ProgramSources,
    StartedEngine,
    default_dtype,
    machine_record,
    program_set,
    run_device,
    settings_record,
    start_engine,
    workload_prompts,
)

from polar_vllm.compat.shutdown import shutdown_engine
from polar_vllm.engine.config import PolarConfig
from polar_vllm.engine.kv_groups import KVGroupLayout
from polar_vllm.models.bundled import BUNDLED_MODELS, prepare_model
from polar_vllm.program import Program, format_program, full_program
from polar_vllm.search.labels import label_programs

KV_RESULTS = RESULTS / "kv_capacity"
STOCK = "stock"
VARIANTS = ("full", "h75", "r110", "labels")
DEFAULT_LABELS = {
    "smollm2-135m": "benchmarks/results/search/smollm2/labels.jsonl",
    "qwen2.5-coder-0.5b": "benchmarks/results/search/qwen2.5-coder/labels.jsonl",
}
GOALS = {"full": (0.97, None), "h75": (1.25, 1.3)}
"""Per variant: (tokens/s ratio to stock, peak-running ratio to stock) the issue asks for."""


def make_engine(
    model_dir: str, polar: bool, args: argparse.Namespace, kv_bytes: int
) -> StartedEngine:
    """A stock or PoLar engine with ``kv_bytes`` of KV cache, in vLLM's default (compiled)
    mode unless ``--eager``."""
    settings: dict[str, Any] = {
        "model": model_dir,
        "dtype": args.dtype,
        "enforce_eager": args.eager,
        "max_model_len": args.max_model_len,
        "max_num_seqs": args.requests,
        "max_num_batched_tokens": args.max_num_batched_tokens,
        "kv_cache_memory_bytes": kv_bytes,
        "enable_prefix_caching": False,  # every variant runs the same prompts
        "disable_log_stats": False,  # the preemption counter
        "seed": args.seed,
    }
    if polar:
        settings["additional_config"] = {"polar": {"kv_group_layers": args.kv_group_layers}}
    return start_engine(settings)


def _counter(llm: Any, name: str) -> float:
    return sum(metric.value for metric in llm.get_metrics() if metric.name == name)


def run_variant(
    llm: Any, prompts: list[str], programs: list[Program] | None, max_tokens: int
) -> dict[str, float]:
    """Run every prompt to ``max_tokens`` new tokens; seconds, tokens, peak running, preemptions."""
    from vllm import SamplingParams

    engine = llm.llm_engine
    scheduler = engine.engine_core.engine_core.scheduler
    preemptions_before = _counter(llm, "vllm:num_preemptions")
    for index, prompt in enumerate(prompts):
        extra = None if programs is None else {"polar_program": format_program(programs[index])}
        params = SamplingParams(
            max_tokens=max_tokens, temperature=0, ignore_eos=True, extra_args=extra
        )
        engine.add_request(f"kv-{index}", prompt, params)
    tokens = peak = 0
    start = time.perf_counter()
    while engine.has_unfinished_requests():
        for output in engine.step():
            if output.finished:
                tokens += len(output.outputs[0].token_ids)
        peak = max(peak, len(scheduler.running))
    seconds = time.perf_counter() - start
    preemptions = _counter(llm, "vllm:num_preemptions") - preemptions_before
    return {"seconds": seconds, "tokens": tokens, "peak": peak, "preemptions": preemptions}


def kv_bytes_per_stock_token(model_dir: str, dtype: str) -> int:
    """KV bytes one token takes in stock vLLM: K and V of every layer."""
    import torch
    from transformers import AutoConfig

    hf_config = AutoConfig.from_pretrained(model_dir).get_text_config()
    head_dim = getattr(hf_config, "head_dim", None) or (
        hf_config.hidden_size // hf_config.num_attention_heads
    )
    itemsize = getattr(torch, dtype).itemsize
    return 2 * hf_config.num_key_value_heads * head_dim * itemsize * hf_config.num_hidden_layers


def shut_down(llm: Any) -> None:
    """Stop an engine and free its memory before the next one starts."""
    shutdown_engine(llm)
    del llm
    gc.collect()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run stock, then PoLar under each variant; the rows of the results file."""
    from transformers import AutoTokenizer

    model_dir = str(prepare_model(args.model))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts, questions = workload_prompts("long", tokenizer, args.requests, args.seed)
    prompt_tokens = statistics.fmean(len(tokenizer(p).input_ids) for p in prompts)

    kv_bytes = args.kv_tokens * kv_bytes_per_stock_token(model_dir, args.dtype)
    started = make_engine(model_dir, False, args, kv_bytes)
    startup_s = {STOCK: started.startup_s}
    stock = started.llm
    cache = stock.llm_engine.vllm_config.cache_config
    stock_capacity = cache.num_gpu_blocks * cache.block_size
    run = run_variant(stock, prompts, None, args.max_tokens)
    depth = stock.llm_engine.model_config.hf_config.get_text_config().num_hidden_layers
    shut_down(stock)
    rows = [_row(STOCK, run, depth, stock_capacity, 1, depth)]

    config = PolarConfig.from_dict({"kv_group_layers": args.kv_group_layers}, depth)
    layout = KVGroupLayout.from_config(config)
    labels = REPOSITORY / (args.labels or DEFAULT_LABELS[args.model])
    sources = ProgramSources(label_programs(labels, depth))
    started = make_engine(model_dir, True, args, kv_bytes)
    startup_s["polar"] = started.startup_s
    polar = started.llm
    cache = polar.llm_engine.vllm_config.cache_config
    for variant in args.variants:
        programs = program_set(variant, depth, questions, args.seed, sources)
        groups = statistics.fmean(len(layout.groups_of(program)) for program in programs)
        # One block id addresses a page in each of the kv_group_layers shared tensors, so a
        # token costs one block slot per group it enters, whatever the group size.
        capacity = cache.num_gpu_blocks * cache.block_size / groups
        run = run_variant(polar, prompts, programs, args.max_tokens)
        layers = statistics.fmean(map(len, programs))
        rows.append(_row(variant, run, layers, capacity, groups, depth))
    shut_down(polar)
    for row in rows:
        row["ratio_to_stock"] = row["tokens_per_s"] / rows[0]["tokens_per_s"]
        row["peak_ratio_to_stock"] = row["peak_running"] / rows[0]["peak_running"]
        row["capacity_ratio_to_stock"] = row["kv_capacity_tokens"] / rows[0]["kv_capacity_tokens"]
    return {
        "benchmark": "kv_capacity",
        "model": args.model,
        "depth": depth,
        "date": datetime.date.today().isoformat(),
        "machine": machine_record(),
        "settings": settings_record(args),
        "kv_bytes": kv_bytes,
        "stock_mode": "eager" if args.eager else "compiled",
        "startup_s": startup_s,
        "mean_prompt_tokens": prompt_tokens,
        "kv_groups": len(layout.groups),
        "full_program_groups": len(layout.groups_of(full_program(depth))),
        "goals": {name: {"ratio": r, "peak_ratio": p} for name, (r, p) in GOALS.items()},
        "rows": rows,
    }


def _row(
    variant: str,
    run: dict[str, float],
    layers: float,
    capacity: float,
    groups: float,
    depth: int,
) -> dict[str, Any]:
    return {
        "variant": variant,
        "mean_executed_layers": layers,
        "mean_kv_groups_entered": groups,
        "kv_capacity_tokens": capacity,
        "tokens_per_s": run["tokens"] / run["seconds"],
        "generated_tokens": run["tokens"],
        "seconds": run["seconds"],
        "peak_running": run["peak"],
        "preemptions": run["preemptions"],
        "ideal_ratio": depth / layers,
    }


def plot(data: dict[str, Any], path: Path) -> None:
    """Bars: tokens/s, peak running requests and KV capacity, each as a ratio to stock."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["rows"]
    names = [row["variant"] for row in rows]
    figure, axes = plt.subplots(1, 3, figsize=(12, 4), sharey=True)
    panels = (
        ("ratio_to_stock", "generated tokens/s"),
        ("peak_ratio_to_stock", "peak running requests"),
        ("capacity_ratio_to_stock", "KV capacity in tokens"),
    )
    for axis, (key, title) in zip(axes, panels, strict=True):
        values = [row[key] for row in rows]
        axis.bar(names, values, color=["grey", *["tab:blue"] * (len(rows) - 1)])
        axis.axhline(1.0, color="black", linewidth=0.8)
        for index, value in enumerate(values):
            axis.text(index, value, f"{value:.2f}x", ha="center", va="bottom", fontsize=8)
        axis.set_title(title)
    axes[0].set_ylabel("ratio to stock vLLM")
    figure.suptitle(
        f"{data['model']}: {data['settings']['requests']} requests of "
        f"~{data['mean_prompt_tokens']:.0f} prompt tokens, KV for "
        f"{data['settings']['kv_tokens']} stock tokens"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", choices=sorted(BUNDLED_MODELS))
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument(
        "--kv-tokens", type=int, default=4096, help="KV budget, in tokens of stock vLLM"
    )
    parser.add_argument("--kv-group-layers", type=int, default=1)
    parser.add_argument("--max-model-len", type=int, default=512)
    parser.add_argument("--max-num-batched-tokens", type=int, default=2048)
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"PoLar program sets beside stock (always run), of {', '.join(PROGRAM_SETS)}",
    )
    parser.add_argument("--labels", help="search label file for 'labels' (default: the model's)")
    parser.add_argument("--dtype", default=None, help=DTYPE_HELP)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--eager",
        action="store_true",
        help="run both engines eagerly (enforce_eager=True); default: vLLM's compiled mode",
    )
    parser.add_argument("--tag", default=None, help="results name suffix (default: the device)")
    args = parser.parse_args(argv)
    args.variants = args.variants.split(",")
    unknown = sorted(set(args.variants) - set(PROGRAM_SETS))
    if unknown:  # before any engine starts
        parser.error(f"unknown program sets {unknown}; stock always runs; known: {PROGRAM_SETS}")
    args.dtype = args.dtype or default_dtype()
    args.tag = args.tag or run_device()
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns (and writes) the results."""
    args = parse_args(argv)
    # In-process engines (their schedulers are read between steps); the byte budget, not the
    # legacy CPU setting, sizes the KV cache.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
    data = measure(args)
    KV_RESULTS.mkdir(parents=True, exist_ok=True)
    stem = KV_RESULTS / f"kv_capacity_{args.tag}"
    stem.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    plot(data, stem.with_suffix(".png"))
    for row in data["rows"]:
        print(
            f"{row['variant']:>7}: {row['tokens_per_s']:7.1f} tok/s ({row['ratio_to_stock']:.2f}x)"
            f"  peak {row['peak_running']:3d} ({row['peak_ratio_to_stock']:.2f}x)"
            f"  preemptions {row['preemptions']:4.0f}"
            f"  KV {row['kv_capacity_tokens']:8.0f} tokens ({row['capacity_ratio_to_stock']:.2f}x)"
        )
    return data


if __name__ == "__main__":
    main()
