"""Per-step host work of stock vLLM and PoLar, by phase, with the engine in this process.

In vLLM's default CPU layout the engine core and its worker are separate processes and the
worker computes on one core, so slow compute hides the host's per-step work. Here every engine
runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) and computes on both cores, and
the host phases of each step are timed by wrapping vLLM's methods (inclusive times: a phase
contains the phases it calls):

* ``schedule`` (``Scheduler.schedule``), of it ``allocate_slots`` (the KV-cache manager and
  its coordinator, per request and KV-cache group), and ``update_from_output``;
* ``update_states`` (the runner's per-request bookkeeping, block tables per group),
  ``prepare_inputs`` (of it every group's slot mapping), ``attention_metadata`` (every group's
  metadata), ``model_forward`` (of it PoLar's
  ``plan_batch`` and ``sub_batches``, the step runner's per-forward preparation), and
  ``sample``.

Variants: ``stock`` and the PoLar program sets of ``throughput.py`` (``full``, ``h75``,
``labels``...). Both engines stay alive; after one untimed warm-up round, ``--repeats`` rounds
each run one pass of every variant over the same batch (every request generates exactly
``--max-tokens``), in an order that flips every round. Reported per variant: the median of
the rounds' ratios of generated tokens/s to stock's, the share of the ideal D / layers, and,
for its median pass, the milliseconds per engine step of each phase. Engines run in vLLM's
default mode (compiled) unless ``--eager``. Writes
``benchmarks/results/host_work/host_work_<tag>.json``.

    python benchmarks/host_work.py --model smollm2-135m --eager --tag cpu_eager
    python benchmarks/host_work.py --model qwen2.5-coder-0.5b --tag cpu_qwen
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # before vLLM is imported

from harness import (
    DTYPE_HELP,
    RESULTS,
    ProgramSources,
    default_dtype,
    engine_settings,
    machine_record,
    program_set,
    run_once,
    settings_record,
    start_engine,
    study_labels,
    workload_prompts,
    write_result,
)
from tqdm import tqdm

from polar_vllm.compat.shutdown import shutdown_engine
from polar_vllm.models.bundled import BUNDLED_MODELS, prepare_model
from polar_vllm.search.labels import label_programs

STOCK = "stock"
PHASES = {
    "schedule": ("vllm.v1.core.sched.scheduler", "Scheduler", "schedule"),
    "allocate_slots": ("vllm.v1.core.kv_cache_manager", "KVCacheManager", "allocate_slots"),
    "update_from_output": ("vllm.v1.core.sched.scheduler", "Scheduler", "update_from_output"),
    "update_states": ("vllm.v1.worker.gpu_model_runner", "GPUModelRunner", "_update_states"),
    "prepare_inputs": ("vllm.v1.worker.gpu_model_runner", "GPUModelRunner", "_prepare_inputs"),
    "attention_metadata": (
        "vllm.v1.worker.gpu_model_runner",
        "GPUModelRunner",
        "_build_attention_metadata",
    ),
    "model_forward": ("vllm.v1.worker.gpu_model_runner", "GPUModelRunner", "_model_forward"),
    "plan_batch": ("polar_vllm.models.polar_decoder", None, "plan_batch"),
    "sub_batches": ("polar_vllm.models.polar_decoder", "_StepRunner", "_prepare_sub_batches"),
    "sample": ("vllm.v1.worker.gpu_model_runner", "GPUModelRunner", "sample_tokens"),
}
"""Phase name -> (module, class or None for a module function, attribute)."""


class PhaseTimer:
    """Accumulated seconds and calls per phase while :meth:`timing` is active."""

    def __init__(self) -> None:
        self.seconds: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start
                self.calls[name] += 1

        return timed

    @contextmanager
    def timing(self) -> Iterator[None]:
        """Wrap every phase's method for the duration of the block."""
        import importlib

        restore = []
        for name, (module_name, class_name, attribute) in PHASES.items():
            owner: Any = importlib.import_module(module_name)
            if class_name is not None:
                owner = getattr(owner, class_name)
            original = owner.__dict__[attribute] if class_name else getattr(owner, attribute)
            setattr(owner, attribute, self.wrap(name, original))
            restore.append((owner, attribute, original))
        try:
            yield
        finally:
            for owner, attribute, original in restore:
                setattr(owner, attribute, original)

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def measure_pass(
    llm: Any, prompts: list[str], programs: list[Any] | None, args: argparse.Namespace
) -> dict[str, Any]:
    """One timed pass with its phase times per engine step."""
    timer = PhaseTimer()
    with timer.timing():
        seconds, tokens, _ = run_once(llm, prompts, programs, args.max_tokens)
    steps = max(timer.calls["model_forward"], 1)
    return {
        "seconds": seconds,
        "tokens": tokens,
        "steps": steps,
        "ms_per_step": {name: 1e3 * timer.seconds[name] / steps for name in PHASES},
        "calls_per_step": {name: timer.calls[name] / steps for name in PHASES},
    }


def summarize(passes: list[dict[str, Any]]) -> dict[str, Any]:
    """The median pass of a variant (by seconds), with every pass's seconds."""
    ordered = sorted(passes, key=lambda one: one["seconds"])
    median = ordered[len(ordered) // 2]
    return {**median, "seconds_by_repeat": [one["seconds"] for one in passes]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns (and writes) the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", choices=sorted(BUNDLED_MODELS))
    parser.add_argument("--programs", default="full,h75,labels")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (after a warm-up)")
    parser.add_argument("--kv-group-layers", type=int, default=1)
    parser.add_argument("--dtype", default=None, help=DTYPE_HELP)
    parser.add_argument("--eager", action="store_true", help="enforce_eager=True everywhere")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="cpu")
    parser.add_argument("--results-dir", type=Path, default=RESULTS / "host_work")
    args = parser.parse_args(argv)
    args.dtype = args.dtype or default_dtype()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    from transformers import AutoTokenizer

    model_dir = str(prepare_model(args.model))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts, questions = workload_prompts("math", tokenizer, args.requests, args.seed)
    settings = engine_settings(
        model_dir, args.dtype, 1024, args.requests, args.seed, eager=args.eager
    )
    stock = start_engine(settings)
    polar_config = {"polar": {"kv_group_layers": args.kv_group_layers}}
    polar = start_engine({**settings, "additional_config": polar_config})
    startup_s = {STOCK: stock.startup_s, "polar": polar.startup_s}
    depth = int(stock.llm.llm_engine.model_config.hf_config.num_hidden_layers)
    labels = study_labels(args.model)
    sources = ProgramSources(label_programs(labels, depth) if labels else ())
    programs: dict[str, Any] = {STOCK: None}
    for variant in args.programs.split(","):
        programs[variant] = program_set(variant, depth, questions, args.seed, sources)
    passes: dict[str, list[dict[str, Any]]] = {name: [] for name in programs}
    # Both engines stay alive and the variants alternate, pass by pass (the order flips every
    # round), so a drift of the machine's speed hits them alike; round 0 is an untimed warm-up.
    for repeat in tqdm(range(args.repeats + 1), desc="host work", unit="round"):
        order = list(programs) if repeat % 2 else list(reversed(programs))
        for variant in order:
            engine = stock.llm if variant == STOCK else polar.llm
            measured = measure_pass(engine, prompts, programs[variant], args)
            if repeat:
                passes[variant].append(measured)
    for llm in (stock.llm, polar.llm):
        shutdown_engine(llm)
    rows: dict[str, dict[str, Any]] = {}
    for variant, program_list in programs.items():
        layers = depth if program_list is None else statistics.fmean(map(len, program_list))
        rows[variant] = summarize(passes[variant]) | {"layers": layers}
    stock_seconds = [one["seconds"] for one in passes[STOCK]]
    for variant, row in rows.items():
        # Per round, the variant's tokens/s over stock's in the same round; the median.
        ratios = [
            stock_s / one["seconds"] * one["tokens"] / passes[STOCK][0]["tokens"]
            for stock_s, one in zip(stock_seconds, passes[variant], strict=True)
        ]
        row["ratios_by_repeat"] = ratios
        row["ratio_to_stock"] = statistics.median(ratios)
        row["share_of_ideal"] = row["ratio_to_stock"] / (depth / row["layers"])
    results = {
        "benchmark": "host_work",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_record(),
        "settings": settings_record(args),
        "depth": depth,
        "stock_mode": "eager" if args.eager else "compiled",
        "startup_s": startup_s,
        "rows": rows,
    }
    write_result(results, args.results_dir / f"host_work_{args.tag}.json")
    print_table(results)
    return results


def print_table(results: dict[str, Any]) -> None:
    """Ratios and the main phases, ms per step, as Markdown."""
    phases = list(PHASES)
    print("| variant | layers | ratio | of ideal | " + " | ".join(phases) + " |")
    print("|" + " --- |" * (4 + len(phases)))
    for name, row in results["rows"].items():
        times = " | ".join(f"{row['ms_per_step'][phase]:.2f}" for phase in phases)
        print(
            f"| {name} | {row['layers']:.1f} | {row['ratio_to_stock']:.3f} | "
            f"{row['share_of_ideal']:.3f} | {times} |"
        )


if __name__ == "__main__":
    main()
