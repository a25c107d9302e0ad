"""Benchmark of the executor core: mixed-program batches against a dense forward.

A toy decoder of ``--layers`` RMSNorm + gated-MLP layers (the vLLM ``(hidden, residual)``
convention, no attention: attention is per request anyway) runs decode-like batches (one token per
request) four ways:

* ``dense``: a plain loop over all layers (the stock forward);
* ``plan-full``: every request runs the full program through ``plan_batch`` + ``run_plan``
  (all steps dense: should cost the same as ``dense``);
* ``homog-75``: every request runs one program with 75% of the layers (dense steps only);
* ``hetero``: requests draw from ``--programs`` distinct programs of 60-110% of the layers
  (skips and repeated segments), seeded.

For each it reports the median time per forward, the layer-token evaluations, the schedule
length, the ratio of measured time to the token-work ideal (dense time x evaluations / (layers x
tokens)) and to the schedule ideal (dense time x schedule length / layers: what a weight-bound
decode step can at best reach), and the host-side planning time (``plan_batch``) with the merge
cache warm and cold. Writes
``benchmarks/results/executor_core/executor_core_<device>[_<tag>].json`` and ``.png``.

    python3 benchmarks/executor_core.py                 # CPU, SmolLM2-135M-sized layers
    python3 benchmarks/executor_core.py --quick         # seconds
    python3 benchmarks/executor_core.py --device cuda   # bfloat16
    python3 benchmarks/executor_core.py --device cuda --hidden 4096 --intermediate 14336 --tag 8b
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from polar_vllm.executor import (
    BatchPlan,
    StepPlan,
    clear_plan_cache,
    plan_batch,
    run_plan,
)

RESULTS = Path(__file__).resolve().parent / "results" / "executor_core"


class ToyDecoder:
    """``layers`` decoder layers of RMSNorm + SiLU-gated MLP, weights in ``[out, in]`` layout."""

    def __init__(self, layers: int, hidden: int, intermediate: int, device, dtype, seed: int = 0):
        gen = torch.Generator(device="cpu").manual_seed(seed)
        self.norm = []
        self.gate_up = []
        self.down = []
        for _ in range(layers):
            gate_up = torch.randn(2 * intermediate, hidden, generator=gen) / hidden**0.5
            down = torch.randn(hidden, intermediate, generator=gen) / intermediate**0.5
            self.norm.append(torch.ones(hidden, device=device, dtype=dtype))
            self.gate_up.append(gate_up.to(device=device, dtype=dtype))
            self.down.append(down.to(device=device, dtype=dtype))
        self.layers = layers
        self.hidden = hidden

    def layer(self, index: int, hidden: torch.Tensor, residual: torch.Tensor | None):
        """One layer; the residual add is fused into the input norm as in vLLM."""
        residual = hidden if residual is None else hidden + residual
        x = F.rms_norm(residual, (self.hidden,), self.norm[index], 1e-6)
        gate, up = F.linear(x, self.gate_up[index]).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, self.down[index]), residual

    def dense_forward(self, hidden: torch.Tensor):
        residual = None
        for index in range(self.layers):
            hidden, residual = self.layer(index, hidden, residual)
        return hidden, residual

    def layer_fn(self, step: StepPlan, hidden: torch.Tensor, residual: torch.Tensor | None):
        return self.layer(step.layer, hidden, residual)

    def plan_forward(self, plan: BatchPlan, hidden: torch.Tensor):
        return run_plan(plan, hidden, None, self.layer_fn)


def random_program(rng: random.Random, depth: int, fraction: float) -> tuple[int, ...]:
    """Layers 0..depth-1 with random skips (fraction < 1) or repeated 1-4 layer segments (> 1)."""
    layers = list(range(depth))
    target = max(1, round(fraction * depth))
    while len(layers) > target:
        layers.pop(rng.randrange(len(layers)))
    while len(layers) < target:
        size = rng.randint(1, min(4, len(layers)))
        start = rng.randrange(0, len(layers) - size + 1)
        layers[start + size : start + size] = layers[start : start + size]
    return tuple(layers)


def workloads(depth: int, batch: int, num_programs: int, seed: int):
    """``(name, per-request programs)`` for one batch size."""
    rng = random.Random(seed)
    full = tuple(range(depth))
    homog = random_program(rng, depth, 0.75)
    pool = [random_program(rng, depth, rng.uniform(0.6, 1.1)) for _ in range(num_programs)]
    mixed = [pool[rng.randrange(num_programs)] for _ in range(batch)]
    return [
        ("dense", [full] * batch),
        ("plan-full", [full] * batch),
        ("homog-75", [homog] * batch),
        ("hetero", mixed),
    ]


def time_interleaved(
    fns: list[Callable[[], object]], warmup: int, repeats: int, device: torch.device
) -> list[float]:
    """Median seconds per call of each of ``fns``, timed round-robin so drift hits all alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            if cuda:
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize(device)
                times[i].append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def time_host(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds per call of a host-side function."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--intermediate", type=int, default=1536)
    parser.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on CUDA")
    parser.add_argument("--batch-sizes", default="1,16,64,256")
    parser.add_argument("--programs", type=int, default=8, help="distinct programs in 'hetero'")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--plan-repeats", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="batch sizes 1,16,64, fewer repeats")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default="", help="suffix of the result file names")
    args = parser.parse_args(argv)

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("CUDA is not available")
    device = torch.device(args.device)
    dtype_name = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    dtype = getattr(torch, dtype_name)
    if args.quick:
        args.batch_sizes = "1,16,64"
        args.warmup, args.repeats, args.plan_repeats = 1, 5, 20
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    model = ToyDecoder(args.layers, args.hidden, args.intermediate, device, dtype, args.seed)
    rows = []
    for batch in tqdm(batch_sizes, desc="executor_core", unit="batch"):
        gen = torch.Generator(device="cpu").manual_seed(args.seed + batch)
        hidden = torch.randn(batch, args.hidden, generator=gen).to(device=device, dtype=dtype)
        lens = [1] * batch
        runs = workloads(args.layers, batch, args.programs, args.seed)
        plans = [plan_batch(programs, lens, device) for _, programs in runs]
        fns: list[Callable[[], object]] = []
        for (name, _), plan in zip(runs, plans, strict=True):
            if name == "dense":
                fns.append(lambda h=hidden: model.dense_forward(h))
            else:
                fns.append(lambda p=plan, h=hidden: model.plan_forward(p, h))
        with torch.inference_mode():
            seconds = time_interleaved(fns, args.warmup, args.repeats, device)
        dense_seconds = seconds[0]

        for (name, programs), plan, secs in zip(runs, plans, seconds, strict=True):

            def plan_cold(p=programs, n=lens):
                clear_plan_cache()
                plan_batch(p, n, device)

            plan_warm = time_host(
                lambda p=programs, n=lens: plan_batch(p, n, device), args.plan_repeats
            )
            plan_cold_s = time_host(plan_cold, max(3, args.plan_repeats // 5))
            dense = name == "dense"
            evals = args.layers * batch if dense else plan.layer_token_evals
            sched_len = args.layers if dense else len(plan.steps)
            work_fraction = evals / (args.layers * batch)
            ideal = dense_seconds * work_fraction
            step_ideal = dense_seconds * sched_len / args.layers
            rows.append(
                {
                    "batch": batch,
                    "workload": name,
                    "distinct_programs": len(set(programs)),
                    "schedule_len": sched_len,
                    "dense_steps": args.layers if dense else plan.num_dense_steps,
                    "layer_token_evals": evals,
                    "work_fraction": work_fraction,
                    "time_ms": secs * 1e3,
                    "ideal_ms": ideal * 1e3,
                    "ratio": secs / ideal,
                    "step_ideal_ms": step_ideal * 1e3,
                    "ratio_step": secs / step_ideal,
                    "plan_warm_us": None if dense else plan_warm * 1e6,
                    "plan_cold_us": None if dense else plan_cold_s * 1e6,
                }
            )
        clear_plan_cache()

    header = (
        f"{'batch':>5} {'workload':<10} {'progs':>5} {'sched':>5} {'dense':>5} {'evals':>6} "
        f"{'work':>5} {'time ms':>9} {'ideal ms':>9} {'ratio':>6} {'r/sched':>7} "
        f"{'plan us':>8} {'cold us':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        plan_w = f"{r['plan_warm_us']:8.0f}" if r["plan_warm_us"] is not None else f"{'-':>8}"
        plan_c = f"{r['plan_cold_us']:8.0f}" if r["plan_cold_us"] is not None else f"{'-':>8}"
        lines.append(
            f"{r['batch']:>5} {r['workload']:<10} {r['distinct_programs']:>5} "
            f"{r['schedule_len']:>5} {r['dense_steps']:>5} {r['layer_token_evals']:>6} "
            f"{r['work_fraction']:>5.2f} {r['time_ms']:>9.3f} {r['ideal_ms']:>9.3f} "
            f"{r['ratio']:>6.2f} {r['ratio_step']:>7.2f} {plan_w} {plan_c}"
        )
    print("\n".join(lines))

    device_tag = device.type + (f"_{args.tag}" if args.tag else "")
    args.out.mkdir(parents=True, exist_ok=True)
    config = {
        "device": device.type,
        "tag": args.tag,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "dtype": dtype_name,
        "layers": args.layers,
        "hidden": args.hidden,
        "intermediate": args.intermediate,
        "batch_sizes": batch_sizes,
        "programs": args.programs,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "quick": args.quick,
        "seed": args.seed,
    }
    json_path = args.out / f"executor_core_{device_tag}.json"
    json_path.write_text(json.dumps({"config": config, "rows": rows}, indent=2) + "\n")
    png_path = args.out / f"executor_core_{device_tag}.png"
    plot(rows, config, png_path)
    print(f"wrote {json_path} and {png_path}")
    return 0


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def plot(rows: list[dict], config: dict, path: Path) -> None:
    """Time per forward and ratio to the ideal, per workload and batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["workload"] for r in rows))
    batches = list(dict.fromkeys(r["batch"] for r in rows))
    fig, (ax_time, ax_ratio) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        sel = {r["batch"]: r for r in rows if r["workload"] == name}
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(batches))]
        ax_time.bar(xs, [sel[b]["time_ms"] for b in batches], width, label=name)
        ax_ratio.bar(xs, [sel[b]["ratio"] for b in batches], width, label=name)
        ax_ratio.scatter(
            xs,
            [sel[b]["ratio_step"] for b in batches],
            color="black",
            marker="_",
            s=120,
            zorder=3,
            label="vs schedule ideal" if i == 0 else None,
        )
    for ax in (ax_time, ax_ratio):
        ax.set_xticks(range(len(batches)), [str(b) for b in batches])
        ax.set_xlabel("batch size (decode, 1 token per request)")
    ax_time.set_ylabel("time per forward (ms)")
    ax_time.set_yscale("log")
    ax_ratio.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax_ratio.set_ylabel("measured / ideal (bars: dense x work fraction)")
    ax_ratio.legend()
    fig.suptitle(
        f"executor core on {config['device']} ({config['device_name']}): "
        f"{config['layers']} layers, hidden {config['hidden']}, "
        f"intermediate {config['intermediate']}, {config['dtype']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
