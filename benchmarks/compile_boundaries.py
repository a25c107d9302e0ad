"""What compiling each decoder layer on its own costs against compiling the whole stack once.

PoLar's compiled path compiles every decoder layer as a graph of its own (a batch's sequence of
layer calls changes step by step), where stock vLLM compiles its whole forward as one graph.
Inductor cannot fuse across the boundary between two layer graphs, and each graph call has a
host cost. This benchmark measures both, torch only: the executor core's toy decoder layers
(RMSNorm + SiLU-gated MLP in vLLM's ``(hidden, residual)`` convention, no attention, so the
whole-stack graph has every fusion across layers it could have) at real sizes run three ways,
timed round-robin on the same inputs:

* ``eager``: the plain loop over layers;
* ``whole``: the loop compiled once, as stock vLLM compiles its forward;
* ``per_layer``: one compiled graph per layer (a code object each, as
  ``polar_vllm/compat/compiled_layers.py`` does), called in a loop, as PoLar runs them.

The token dimension is dynamic in both compiled forms; Inductor freezes the weights, as vLLM's
CPU compile does. Reported per token count: ms per forward and ``per_layer / whole``. Writes
``benchmarks/results/compile_boundaries/compile_boundaries_<tag>.json``.

    python3 benchmarks/compile_boundaries.py                      # Qwen2.5-0.5B-sized, float32
    python3 benchmarks/compile_boundaries.py --quick              # seconds
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from executor_core import ToyDecoder, device_name, time_interleaved

RESULTS = Path(__file__).resolve().parent / "results" / "compile_boundaries"


def _compile(fn: Callable, name: str) -> Callable:
    """``fn`` compiled under a code object named ``name`` of its own, guards dropped."""
    code = fn.__code__.replace(co_name=name, co_qualname=name)
    own = types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    return torch.compile(
        own,
        fullgraph=True,
        dynamic=False,
        options={"guard_filter_fn": torch.compiler.skip_all_guards_unsafe},
    )


def forwards(model: ToyDecoder) -> dict[str, Callable]:
    """The eager, whole-stack compiled and per-layer compiled forwards of ``model``."""

    def run_layer(index: int, hidden: torch.Tensor, residual: torch.Tensor):
        return model.layer(index, hidden, residual)

    def run_stack(hidden: torch.Tensor, residual: torch.Tensor):
        for index in range(model.layers):
            hidden, residual = model.layer(index, hidden, residual)
        return hidden, residual

    # A layer's graph holds its own weights: one code object per layer (index bound as a default).
    layer_graphs = [
        _compile(lambda h, r, i=index: run_layer(i, h, r), f"layer_{index}")
        for index in range(model.layers)
    ]

    def per_layer(hidden: torch.Tensor, residual: torch.Tensor):
        for graph in layer_graphs:
            hidden, residual = graph(hidden, residual)
        return hidden, residual

    return {"eager": run_stack, "whole": _compile(run_stack, "stack"), "per_layer": per_layer}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=896)
    parser.add_argument("--intermediate", type=int, default=4864)
    parser.add_argument("--tokens", default="1,16,64,256", help="token counts per forward")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--tag", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="4 small layers, 3 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.layers, args.hidden, args.intermediate, args.repeats = 4, 64, 128, 3
        args.tag = "quick"
    import torch._inductor.config as inductor_config

    device = torch.device("cpu")
    model = ToyDecoder(args.layers, args.hidden, args.intermediate, device, torch.float32)
    fns = forwards(model)
    token_counts = [int(n) for n in args.tokens.split(",")]
    rows = []
    # Weights folded into the graphs (Inductor's freezing), as vLLM's CPU compile does.
    with inductor_config.patch(freezing=True), torch.inference_mode():
        warm = torch.randn(max(2, token_counts[0]), args.hidden)
        residual = torch.zeros_like(warm)
        for tensor in (warm, residual):
            torch._dynamo.mark_dynamic(tensor, 0)
        start = time.perf_counter()
        for name in ("whole", "per_layer"):
            fns[name](warm, residual)
        compile_s = time.perf_counter() - start
        for tokens in tqdm(token_counts, desc="token counts"):
            hidden = torch.randn(tokens, args.hidden)
            residual = torch.zeros_like(hidden)
            calls = [lambda f=f, h=hidden, r=residual: f(h, r) for f in fns.values()]
            seconds = dict(zip(fns, time_interleaved(calls, 2, args.repeats, device), strict=True))
            rows.append(
                {
                    "tokens": tokens,
                    **{f"{name}_ms": s * 1e3 for name, s in seconds.items()},
                    "per_layer_vs_whole": seconds["per_layer"] / seconds["whole"],
                }
            )
            print(json.dumps(rows[-1]))
    config = {
        key: getattr(args, key)
        for key in ("layers", "hidden", "intermediate", "tokens", "repeats", "tag")
    }
    config.update(device=device_name(device), dtype="float32", compile_s=compile_s)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"compile_boundaries_{args.tag}.json"
    path.write_text(json.dumps({"config": config, "rows": rows}, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
