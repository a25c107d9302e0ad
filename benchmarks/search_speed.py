"""Candidate programs evaluated per second: back ends, or the engine settings of search configs,
side by side in one run on the same requests.

The workload is what the program search sends: questions of ``--levels`` as chat prompts, each
with the full program and ``--programs-per-question - 1`` distinct programs a few random search
moves (skip or repeat a block of layers) away from it, greedy, ``--max-tokens`` new tokens.

* ``--backends vllm,reference``: PoLar vLLM (all requests in ONE ``generate`` call, after a
  small warm-up call) against a one-request-at-a-time transformers loop (on the GPU when there
  is one; optionally only the first ``--reference-limit`` requests, since it is slow); reports
  the speed-up and the share of requests both ran whose texts are identical.
* ``--configs A.yaml,B.yaml``: one PoLar vLLM engine per search config, each with that config's
  engine settings (dtype, scheduling, ``max_num_seqs``, ``max_num_batched_tokens``), run one
  after the other on the same requests; reports each config's programs/s and its ratio to the
  first. This is how a search config's speed-up is measured (before -> after).

Writes ``benchmarks/results/search_speed/search_speed_<tag>.json``.

    python benchmarks/search_speed.py                                   # both back ends
    python benchmarks/search_speed.py --backends reference --questions 2 --programs-per-question 2
    python benchmarks/search_speed.py --levels 1,2,3 --tag cpu_qwen_configs \\
        --configs configs/search/qwen_study.yaml,configs/search/qwen_labels.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from polar_vllm.data import build_prompt, generate_problems
from polar_vllm.program import Program, format_program, full_program
from polar_vllm.search.actions import ActionSpace, length_window
from polar_vllm.search.backends import open_generator
from polar_vllm.search.config import BACKENDS, SearchConfig, load_search_config
from polar_vllm.search.generation import GenerationRequest

RESULTS = Path(__file__).resolve().parent / "results" / "search_speed"


def candidate_programs(space: ActionSpace, count: int, rng: random.Random) -> list[Program]:
    """The full program and ``count - 1`` distinct programs 1..4 random moves away from it."""
    programs = [full_program(space.depth)]
    while len(programs) < count:
        program = programs[0]
        for step in range(rng.randint(1, 4)):
            program = rng.choice(space.children(program, step))
        if program not in programs:
            programs.append(program)
    return programs


def build_requests(args: argparse.Namespace, depth: int, tokenizer: Any) -> list[GenerationRequest]:
    """The benchmark's (prompt, program) requests, reproducibly from ``args.seed``."""
    space = ActionSpace(depth, *length_window(depth, 0.65, 1.25))
    rng = random.Random(f"search-speed:{args.seed}")
    levels = [int(level) for level in args.levels.split(",")]
    problems = [
        problem
        for index, level in enumerate(levels)
        for problem in generate_problems(
            level, args.questions // len(levels) + (index < args.questions % len(levels)), args.seed
        )
    ]
    requests = []
    for problem in problems:
        prompt = build_prompt(problem.question, tokenizer)
        for program in candidate_programs(space, args.programs_per_question, rng):
            requests.append(GenerationRequest(prompt, program, max_tokens=args.max_tokens))
    return requests


def run_variant(
    config: SearchConfig, args: argparse.Namespace, requests: list[GenerationRequest] | None
) -> tuple[dict[str, Any], list[GenerationRequest], list[str]]:
    """Time the generator of ``config`` on ``requests`` (built on first use); its row, requests
    and texts."""
    started = time.perf_counter()
    with open_generator(config) as (generator, tokenizer):
        startup = time.perf_counter() - started
        if requests is None:
            requests = build_requests(args, generator.depth, tokenizer)
        timed = requests
        if config.backend == "vllm":
            generator.generate(requests[:2])  # warm-up
        elif args.reference_limit is not None:
            timed = requests[: args.reference_limit]
        started = time.perf_counter()
        texts = generator.generate(timed)
        seconds = time.perf_counter() - started
    row = {
        "startup_s": startup,
        "seconds": seconds,
        "programs": len(timed),
        "programs_per_s": len(timed) / seconds,
        "generate_calls": 1 if config.backend == "vllm" else len(timed),
    }
    return row, requests, texts


def variants(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, SearchConfig]:
    """The named configurations to time: one per back end, or one per search config file."""
    if args.configs:
        configs = {Path(path).stem: load_search_config(path) for path in args.configs.split(",")}
        if len({c.model for c in configs.values()}) != 1:
            parser.error("--configs must all name the same model")
        return {
            name: dataclasses.replace(config, backend="vllm") for name, config in configs.items()
        }
    backends = args.backends.split(",")
    if not backends or any(b not in BACKENDS for b in backends):
        parser.error(f"--backends must be a subset of {BACKENDS}")
    return {
        backend: SearchConfig(
            model=args.model, backend=backend, dtype=args.dtype, max_model_len=args.max_model_len
        )
        for backend in backends
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison, print it, write the JSON; returns the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="bundled model or directory")
    parser.add_argument("--backends", default="vllm,reference", help="comma-separated")
    parser.add_argument("--configs", default=None, help="comma-separated search YAML files")
    parser.add_argument("--levels", default="1", help="comma-separated question levels")
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--programs-per-question", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--reference-limit", type=int, default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results-dir", default=str(RESULTS))
    parser.add_argument("--tag", default=None, help="file name tag (default: cpu or cuda)")
    args = parser.parse_args(argv)
    configs = variants(args, parser)

    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor()
    rows: dict[str, Any] = {}
    texts: dict[str, list[str]] = {}
    requests = None
    for name, config in configs.items():
        rows[name], requests, texts[name] = run_variant(config, args, requests)
        print(f"{name:>12}: {rows[name]['programs_per_s']:.2f} programs/s")
    first = next(iter(configs.values()))
    results: dict[str, Any] = {
        "model": first.model,
        "device": device or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "command": "python benchmarks/search_speed.py " + " ".join(argv or sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "requests": len(requests),
        "questions": args.questions,
        "levels": args.levels,
        "programs_per_question": args.programs_per_question,
        "max_tokens": args.max_tokens,
        "distinct_programs": len({format_program(r.program) for r in requests}),
    }
    if args.configs:
        results["configs"] = {
            name: {**dataclasses.asdict(config), **rows[name]} for name, config in configs.items()
        }
        base = rows[next(iter(configs))]["programs_per_s"]
        for name, row in rows.items():
            row["ratio_to_first"] = row["programs_per_s"] / base
            results["configs"][name]["ratio_to_first"] = row["ratio_to_first"]
            print(f"{name:>12}: {row['ratio_to_first']:.2f}x the first config")
    else:
        results["dtype"] = args.dtype
        results["backends"] = rows
    if {"vllm", "reference"} <= set(rows):
        results["speedup"] = rows["vllm"]["programs_per_s"] / rows["reference"]["programs_per_s"]
        common = min(len(texts["vllm"]), len(texts["reference"]))
        same = sum(a == b for a, b in zip(texts["vllm"], texts["reference"], strict=False))
        results["same_text_share"] = same / common
        print(f"  speed-up: {results['speedup']:.1f}x, same text: {same}/{common}")
    tag = args.tag or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.results_dir) / f"search_speed_{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
