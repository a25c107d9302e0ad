"""The executor core with CUDA graphs: PoLar's graphed plan runner against a graphed dense
forward of the same layers, attention included (torch only, no vLLM).

A decoder of ``--layers`` layers with real shapes and random weights: *pre* (residual add,
RMSNorm, QKV projection) and *post* (output projection, residual add, RMSNorm, SiLU-gated MLP)
pieces around a decode attention over a per-(layer, pass) KV cache of ``--context`` tokens per
request (SDPA; runs between the pieces, never captured, as in vLLM's piecewise mode). Decode
batches (one token per request) run four ways:

* ``dense``: each layer's pieces replayed in order, no plan (the stock forward, graphed);
* ``plan-full``: every request runs the full program through ``plan_batch`` and
  :class:`~polar_vllm.executor.graphs.GraphedPlanRunner` (all steps dense);
* ``homog-75``: one program with 75% of the layers for every request;
* ``hetero``: requests draw from ``--programs`` programs of 60-110% of the layers.

``--capture`` records CUDA graphs (CUDA only); without it the same static-buffer code runs
eagerly, which is how it runs on a CPU. Reports per batch the median time per forward and
the ratio to ``dense`` and to the ideal (``dense`` x layer-token work); writes
``benchmarks/results/executor_core/executor_graphs_<device>[_<tag>].json``.

    python benchmarks/executor_graphs.py --quick                                    # CPU, eager
    python benchmarks/executor_graphs.py --device cuda --capture --tag qwen05b      # Qwen2.5-0.5B
    python benchmarks/executor_graphs.py --device cuda --capture --layers 32 --hidden 4096 \\
        --intermediate 14336 --heads 32 --kv-heads 8 --head-dim 128 --tag llama8b    # Llama-8B
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from executor_core import device_name, time_interleaved, workloads

from polar_vllm.executor import StepPlan, plan_batch
from polar_vllm.executor.graphs import DEFAULT_BUCKETS, GraphedPlanRunner, bucket_for

RESULTS = Path(__file__).resolve().parent / "results" / "executor_core"


class AttentionDecoder:
    """Random-weight decoder layers in vLLM's ``(hidden, residual)`` convention, cut into the
    pre and post pieces, with a decode attention over a static KV cache per (layer, pass)."""

    def __init__(self, args: argparse.Namespace, batch: int, device, dtype) -> None:
        generator = torch.Generator(device="cpu").manual_seed(args.seed)

        def weight(rows: int, cols: int) -> torch.Tensor:
            values = torch.randn(rows, cols, generator=generator) / cols**0.5
            return values.to(device=device, dtype=dtype)

        self.heads, self.kv_heads, self.head_dim = args.heads, args.kv_heads, args.head_dim
        q_size, kv_size = args.heads * args.head_dim, args.kv_heads * args.head_dim
        self.sizes = (q_size, kv_size, kv_size)
        self.hidden = args.hidden
        self.qkv = [weight(q_size + 2 * kv_size, args.hidden) for _ in range(args.layers)]
        self.o = [weight(args.hidden, q_size) for _ in range(args.layers)]
        self.gate_up = [weight(2 * args.intermediate, args.hidden) for _ in range(args.layers)]
        self.down = [weight(args.hidden, args.intermediate) for _ in range(args.layers)]
        self.norm = torch.ones(args.hidden, device=device, dtype=dtype)
        cache_shape = (2 * args.layers, batch, args.kv_heads, args.context, args.head_dim)
        self.keys = torch.randn(cache_shape, generator=generator).to(device=device, dtype=dtype)
        self.values = torch.randn(cache_shape, generator=generator).to(device=device, dtype=dtype)
        self.layers = args.layers

    def pre(self, layer: int, hidden: torch.Tensor, residual: torch.Tensor):
        residual = hidden + residual
        normed = F.rms_norm(residual, (self.hidden,), self.norm, 1e-6)
        return F.linear(normed, self.qkv[layer]), residual

    def post(self, layer: int, attended: torch.Tensor, residual: torch.Tensor):
        residual = F.linear(attended, self.o[layer]) + residual
        normed = F.rms_norm(residual, (self.hidden,), self.norm, 1e-6)
        gate, up = F.linear(normed, self.gate_up[layer]).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, self.down[layer]), residual

    def attend(self, slot: int, requests: torch.Tensor | None, qkv: torch.Tensor) -> torch.Tensor:
        """Decode attention of one row per request against its cached context in ``slot``."""
        query = qkv[:, : self.sizes[0]].view(-1, self.heads, 1, self.head_dim)
        keys, values = self.keys[slot], self.values[slot]
        if requests is not None:
            keys, values = keys.index_select(0, requests), values.index_select(0, requests)
        else:
            keys, values = keys[: query.shape[0]], values[: query.shape[0]]
        out = F.scaled_dot_product_attention(query, keys, values, enable_gqa=True)
        return out.reshape(query.shape[0], -1)

    def runner(self, max_tokens: int, buckets, device, dtype, capture: bool) -> GraphedPlanRunner:
        """A graphed plan runner of these pieces, for up to ``max_tokens`` rows."""
        return GraphedPlanRunner(
            self.pre,
            self.post,
            self.attention,
            hidden_size=self.hidden,
            max_tokens=max_tokens,
            dtype=dtype,
            device=device,
            buckets=buckets,
            capture=capture,
        )

    def attention(self, step: StepPlan, qkv: torch.Tensor) -> torch.Tensor:
        """Each slot's rows (decode: token rows are request indices) on its own KV cache."""
        outputs = []
        start = 0
        for slot in step.slots:
            rows = qkv.shape[0] if step.is_dense else slot.num_tokens
            requests = None if step.is_dense else slot.token_index
            cache = slot.pass_index * self.layers + step.layer
            outputs.append(self.attend(cache, requests, qkv[start : start + rows]))
            start += rows
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


class DenseGraphed:
    """The stock forward, graphed the same way: per layer, pre and post pieces on the whole
    batch (captured once for this batch size), attention between them."""

    def __init__(self, model: AttentionDecoder, batch: int, device, dtype, capture: bool) -> None:
        self.runner = model.runner(batch, (batch,), device, dtype, capture)
        # Planned once: every step is dense, so a forward runs no gathers and no planning.
        self.plan = plan_batch([tuple(range(model.layers))] * batch, [1] * batch, device)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.runner.run(self.plan, hidden)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--capture", action="store_true", help="record CUDA graphs (CUDA only)")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=896)
    parser.add_argument("--intermediate", type=int, default=4864)
    parser.add_argument("--heads", type=int, default=14)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--context", type=int, default=256, help="cached tokens per request")
    parser.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on CUDA")
    parser.add_argument("--batch-sizes", default="1,8,32,128,256")
    parser.add_argument("--programs", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small layers, batches 1,4, eager")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default="")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.quick:
        args.layers, args.hidden, args.intermediate, args.heads, args.kv_heads = 6, 64, 128, 4, 2
        args.head_dim, args.context, args.batch_sizes = 16, 16, "1,4"
        args.warmup, args.repeats = 1, 3
    dtype_name = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    dtype = getattr(torch, dtype_name)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    rows = []
    for batch in tqdm(batch_sizes, desc="executor_graphs", unit="batch"):
        model = AttentionDecoder(args, batch, device, dtype)
        generator = torch.Generator(device="cpu").manual_seed(args.seed + batch)
        hidden = torch.randn(batch, args.hidden, generator=generator).to(device, dtype)
        dense = DenseGraphed(model, batch, device, dtype, args.capture)
        runner = model.runner(batch, DEFAULT_BUCKETS, device, dtype, args.capture)
        runs = workloads(args.layers, batch, args.programs, args.seed)[1:]
        lens = [1] * batch

        def planned(programs, runner=runner, hidden=hidden, lens=lens):
            return lambda: runner.run(plan_batch(programs, lens, device), hidden)

        fns = [lambda dense=dense, hidden=hidden: dense.forward(hidden)]
        fns += [planned(programs) for _, programs in runs]
        started = time.perf_counter()
        with torch.inference_mode():
            seconds = time_interleaved(fns, args.warmup, args.repeats, device)
        for (name, programs), secs in zip([("dense", None), *runs], seconds, strict=True):
            plan = None if programs is None else plan_batch(programs, [1] * batch, device)
            work = 1.0 if plan is None else plan.layer_token_evals / (args.layers * batch)
            rows.append(
                {
                    "batch": batch,
                    "workload": name,
                    "time_ms": secs * 1e3,
                    "ratio_to_dense": secs / seconds[0],
                    "work_fraction": work,
                    "ratio_to_ideal": secs / (seconds[0] * work),
                    "steps": args.layers if plan is None else len(plan.steps),
                    "buckets": sorted(
                        {bucket_for(s.num_tokens, runner.buckets) for s in plan.steps}
                    )
                    if plan is not None
                    else [batch],
                }
            )
        rows[-1]["pieces"] = runner.num_graphs
        rows[-1]["wall_s"] = time.perf_counter() - started  # the batch's runs, captures included
    print(f"{'batch':>5} {'workload':<10} {'ms':>9} {'vs dense':>8} {'vs ideal':>8}")
    for row in rows:
        print(
            f"{row['batch']:>5} {row['workload']:<10} {row['time_ms']:>9.3f} "
            f"{row['ratio_to_dense']:>8.2f} {row['ratio_to_ideal']:>8.2f}"
        )
    tag = device.type + (f"_{args.tag}" if args.tag else "")
    config = {key: value for key, value in vars(args).items() if key != "out"}
    config["device_name"] = device_name(device)
    config["torch"] = torch.__version__
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"executor_graphs_{tag}.json"
    path.write_text(json.dumps({"config": config, "rows": rows}, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
