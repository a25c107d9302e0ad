"""Per-request predictor overhead: encoder, head and decoding milliseconds.

Runs the predictor (a trained directory, or a randomly initialised one for the bundled SmolLM2
when none is given: the cost does not depend on the weights) on batches of generated math
questions and prints the per-request time of each stage; writes JSON under
``benchmarks/results/``. The share of a request's latency is computed separately against the
engine's generation time.

    .venv/bin/python benchmarks/predictor_overhead.py --batch-sizes 1,8,32 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import torch

from polar_vllm.data import generate_problems
from polar_vllm.predictor import init_random_predictor, load_predictor
from polar_vllm.predictor.overhead import measure_overhead

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    """Measure and report the predictor's per-request overhead."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predictor", help="predictor directory (default: random, SmolLM2)")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--top-k", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tag", default="cpu")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        directory = args.predictor or init_random_predictor(scratch, "smollm2-135m", 30)
        predictor = load_predictor(directory, device=args.device)
    questions = [p.question for level in (1, 3, 5) for p in generate_problems(level, 32, seed=7)]
    rows = []
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        batch = questions[:batch_size]
        row = measure_overhead(predictor, batch, top_k=args.top_k, repeats=args.repeats)
        rows.append(row)
        print(
            f"batch {batch_size:3d}: encoder {row['encoder_ms']:.2f} ms, head "
            f"{row['head_ms']:.2f} ms, decoding {row['decoding_ms']:.2f} ms, total "
            f"{row['total_ms']:.2f} ms per request"
        )
    report = {
        "predictor": Path(args.predictor).name if args.predictor else "random smollm2-135m",
        "depth": predictor.config.depth,
        "encoder": predictor.config.encoder,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"predictor_overhead_{args.tag}.json"
    out.write_text(json.dumps(report, indent=1))
    print(out)


if __name__ == "__main__":
    main()
