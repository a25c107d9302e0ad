"""The shipped predictor served end to end: ``vllm serve MODEL --polar-predictor NAME`` on
loopback, asked with the ``openai`` client the way a user asks it.

The test questions of a predictor run config (``--config``, its eval section; in-distribution
levels only, ``--count-per-level`` of each) go to ``/v1/chat/completions`` as chat messages,
``--concurrency`` at a time, greedy, the config's ``max_tokens``. The server's predictor reads
each request's last user message. For every question the script also asks
``/v1/polar/program`` which program the server runs, so the report holds pass@1, mean executed
layers and the programs' sources, plus wall time and requests/s. The server's
``polar_executed_layers`` metric is read afterwards as a cross-check. Writes
``benchmarks/results/predictor_payoff/served_<tag>.json``.

    python benchmarks/served_predictor.py --config configs/predictor/qwen.yaml --tag cpu_qwen
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness import write_result

from polar_vllm.data import answers_match, build_messages, extract_answer
from polar_vllm.models.bundled import resolve_model
from polar_vllm.predictor.eval_run import build_items
from polar_vllm.predictor.run_settings import load_settings

RESULTS = Path(__file__).resolve().parent / "results" / "predictor_payoff"


@contextlib.contextmanager
def served(model_dir: str, args: list[str], port: int, timeout_s: float) -> Iterator[str]:
    """A ``vllm serve`` process on 127.0.0.1:``port`` with ``args``; its base URL."""
    vllm = Path(sys.executable).with_name("vllm")
    command = [str(vllm), "serve", model_dir, "--host", "127.0.0.1", "--port", str(port), *args]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    process = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {process.returncode}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{url}/health", timeout=2) as reply,
            ):
                if reply.status == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"vllm serve did not answer /health in {timeout_s:.0f} s")
            time.sleep(2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


def post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST ``body`` as JSON to ``url``; the JSON reply."""
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read())


def executed_layers_metric(url: str) -> dict[str, float]:
    """``polar_executed_layers``'s sum and count from the server's ``/metrics``."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as reply:
        lines = reply.read().decode().splitlines()
    found = {}
    for line in lines:
        for part in ("sum", "count"):
            if line.startswith(f"polar_executed_layers_{part}"):
                found[part] = float(line.rsplit(" ", 1)[1])
    return found


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Serve the predictor, ask every question with the openai client, write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="predictor run YAML (its eval section)")
    parser.add_argument("--predictor", default=None, help="name or directory (default: config)")
    parser.add_argument("--operating-point", default=None, help="default: the predictor's")
    parser.add_argument("--count-per-level", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--results-dir", default=str(RESULTS))
    parser.add_argument("--tag", default="cpu")
    args = parser.parse_args(argv)

    from openai import OpenAI

    settings = load_settings(args.config)
    options = dataclasses.replace(
        settings.eval, count_per_level=args.count_per_level, ood_files=(), ood_levels=()
    )
    items, _ = build_items(options)
    model_dir = resolve_model(settings.model)
    predictor = args.predictor or settings.predictor_dir
    serve_args = ["--polar-predictor", predictor, "--dtype", options.dtype]
    serve_args += ["--max-model-len", "1024"]
    if args.operating_point:
        serve_args += ["--polar-operating-point", args.operating_point]
    with served(model_dir, serve_args, args.port, timeout_s=600) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused")

        def ask(question: str) -> tuple[str, dict[str, Any]]:
            messages = build_messages(question)
            reply = client.chat.completions.create(
                model=model_dir, messages=messages, max_tokens=options.max_tokens, temperature=0
            )
            program = post_json(f"{url}/v1/polar/program", {"messages": messages})
            return reply.choices[0].message.content or "", program

        questions = [item.problem.question for item in items]
        started = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            answers = list(pool.map(ask, questions))
        seconds = time.perf_counter() - started
        metric = executed_layers_metric(url)
    right = [
        answers_match(extract_answer(text), item.problem.answer)
        for (text, _), item in zip(answers, items, strict=True)
    ]
    layers = [program["executed_layers"] for _, program in answers]
    sources = [program["source"] for _, program in answers]
    results = {
        "model": settings.model,
        "predictor": Path(predictor).name,
        "operating_point": args.operating_point or "default",
        "command": "python benchmarks/served_predictor.py " + " ".join(argv or sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "questions": len(items),
        "pass@1": statistics.fmean(right),
        "pass@1_by_level": {
            group: statistics.fmean(
                r for r, item in zip(right, items, strict=True) if item.group == group
            )
            for group in sorted({item.group for item in items})
        },
        "mean_layers": statistics.fmean(layers),
        "predicted_share": sources.count("predictor") / len(sources),
        "distinct_programs": len({program["program"] for _, program in answers}),
        "seconds": seconds,
        "requests_per_s": len(items) / seconds,
        "server_executed_layers": metric,
    }
    print(json.dumps({k: v for k, v in results.items() if k != "command"}, indent=1))
    write_result(results, Path(args.results_dir) / f"served_{args.tag}.json")
    return results


if __name__ == "__main__":
    main()
