"""What the benchmark scripts share: engine settings, workloads, program sets, run records.

The scripts import it as a sibling (``from harness import ...``): run as
``python benchmarks/<script>.py``, a script's own folder is first on ``sys.path``. Importing
it also puts the repository root first, so a script runs the ``polar_vllm`` of the checkout it
lives in (say, a git worktree) rather than another installed copy.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from polar_vllm.compat.engine_environment import reread_environment
from polar_vllm.data import build_prompt, generate_problems
from polar_vllm.program import Program, format_program, full_program
from polar_vllm.program.families import homogeneous_program, random_polar_programs
from polar_vllm.search.config import load_search_config
from polar_vllm.search.labels import label_programs

REPOSITORY = Path(__file__).resolve().parent.parent
RESULTS = REPOSITORY / "benchmarks" / "results"
PROGRAM_SETS = ("full", "h50", "h75", "h90", "r110", "r125", "mixed", "labels", "predicted")
WORKLOADS = ("math", "long")
TARGET_SHARE_OF_IDEAL = 0.9
"""The share of the ideal speed-up (D / mean executed layers) mixed programs should reach."""
BF16_PROBES = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
DTYPE_HELP = (
    "model dtype (default: float32 on CPU, bfloat16 on a CUDA GPU); on CPU, float32 runs well "
    "everywhere, bfloat16 only with AVX-512 BF16 or AMX (elsewhere it is several times slower)"
)
GPU_MEMORY_SHARE = 0.9
"""vLLM's default share of GPU memory for one engine; engines that share a GPU split it."""
STUDY_CONFIGS = REPOSITORY / "configs" / "search"
"""Search configs; an oracle study's labels give the ``labels`` mix (:func:`study_labels`)."""
MIXES = ("mixed", "labels")
"""Heterogeneous program mixes of :func:`mix_programs`."""


@dataclass(frozen=True)
class ProgramSources:
    """Programs from outside the benchmark: a pool from search labels, and a predictor."""

    label_pool: tuple[Program, ...] = ()
    predictor: Any = None


def program_set(
    name: str, depth: int, questions: list[str], seed: int, sources: ProgramSources
) -> list[Program]:
    """The program of each request (one per question) under program set ``name``."""
    batch_size = len(questions)
    if name == "full":
        return [full_program(depth)] * batch_size
    if name[0] in "hr" and name[1:].isdigit():
        return [homogeneous_program(depth, int(name[1:]) / 100)] * batch_size
    if name == "mixed":
        pool = random_polar_programs(depth, 8, seed)
        return [pool[index % len(pool)] for index in range(batch_size)]
    if name == "labels":
        if not sources.label_pool:
            raise ValueError("program set 'labels' needs --labels FILE")
        return [sources.label_pool[i % len(sources.label_pool)] for i in range(batch_size)]
    if name == "predicted":
        if sources.predictor is None:
            raise ValueError("program set 'predicted' needs --predictor DIR")
        from polar_vllm.predictor import predict_programs

        return [tuple(ranked[0]) for ranked in predict_programs(sources.predictor, questions, 1)]
    raise ValueError(f"unknown program set {name!r}; known: {PROGRAM_SETS}")


def workload_prompts(
    name: str, tokenizer: Any, count: int, seed: int
) -> tuple[list[str], list[str]]:
    """``count`` prompts and the question each asks: chat-formatted math questions, or long
    (~400-token) documents that end with the question."""
    problems = [
        problem
        for level in range(1, 6)
        for problem in generate_problems(level, (count + 4) // 5, seed + level)
    ][:count]
    questions = [problem.question for problem in problems]
    if name == "math":
        return [build_prompt(question, tokenizer) for question in questions], questions
    if name == "long":
        documents = []
        for index in range(len(problems)):
            context = " ".join(questions[index:] + questions[:index])
            words = context.split()[:300]
            documents.append(
                build_prompt(" ".join(words) + "\n\nAnswer the first question.", tokenizer)
            )
        return documents, questions
    raise ValueError(f"unknown workload {name!r}; known: {WORKLOADS}")


def run_once(
    llm: Any, prompts: list[str], programs: list[Program] | None, max_tokens: int
) -> tuple[float, int, float]:
    """Seconds, generated tokens and mean time to first token of one batch."""
    from vllm import SamplingParams

    params = [
        SamplingParams(
            max_tokens=max_tokens,
            temperature=0,
            ignore_eos=True,
            extra_args=None if programs is None else {"polar_program": format_program(program)},
        )
        for program in (programs or [None] * len(prompts))
    ]
    start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    tokens = sum(len(output.outputs[0].token_ids) for output in outputs)
    ttfts = [output.metrics.first_token_latency for output in outputs if output.metrics]
    return seconds, tokens, statistics.fmean(ttfts) if ttfts else float("nan")


def cpu_model() -> str:
    """The CPU's model name (Linux: ``/proc/cpuinfo``), else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    return platform.processor() or platform.machine()


def machine_record() -> dict[str, Any]:
    """The machine a run measured: platform, CPU model, cores, CPU instruction set, device, torch.

    ``cpu_bf16`` says whether the CPU has bf16 matrix instructions (AVX-512 BF16 or AMX), so
    whether a bfloat16 run is fast on it (torch's private probes; ``None`` if they are gone).
    """
    import torch

    probes = [getattr(torch.cpu, name, None) for name in BF16_PROBES]
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16": any(probe() for probe in probes) if all(probes) else None,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
    }


def settings_record(args: argparse.Namespace) -> dict[str, Any]:
    """The options of a run, for its results file; paths are written relative to the
    repository (a path outside it by its file name), so results name no machine's folders."""

    def portable(value: Any) -> Any:
        if not isinstance(value, Path):
            return value
        resolved = value.resolve()
        return (
            str(resolved.relative_to(REPOSITORY))
            if resolved.is_relative_to(REPOSITORY)
            else value.name
        )

    return {
        key: portable(value)
        for key, value in vars(args).items()
        if key not in {"quick", "results_dir"}
    }


def run_device() -> str:
    """``cuda`` where a CUDA GPU is visible, else ``cpu``: the default results tag."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype() -> str:
    """The model dtype when none is given: bfloat16 on a CUDA GPU (what vLLM serves there, and
    what FlashAttention needs), float32 on CPU (fast on every CPU)."""
    return "bfloat16" if run_device() == "cuda" else "float32"


def engine_settings(
    model_dir: str,
    dtype: str,
    max_model_len: int,
    max_num_seqs: int,
    seed: int,
    engines_on_device: int = 1,
    eager: bool = False,
) -> dict[str, Any]:
    """The ``LLM`` arguments every benchmark engine shares, stock and PoLar alike.

    Engines run in vLLM's default mode, compiled, as users run it, unless ``eager`` (an extra,
    labelled row). On a CUDA GPU the ``engines_on_device`` engines a benchmark keeps alive at
    once split vLLM's default memory share (each engine claims its share when it starts)."""
    gpu = {"gpu_memory_utilization": GPU_MEMORY_SHARE / engines_on_device}
    return {
        **(gpu if run_device() == "cuda" else {}),
        "model": model_dir,
        "dtype": dtype,
        "enforce_eager": eager,
        "max_model_len": max_model_len,
        "max_num_seqs": max_num_seqs,
        "disable_log_stats": False,  # request metrics carry the time to first token
        "seed": seed,
        # Every variant runs the same prompts: with prefix caching, a repeat (or a variant
        # whose program another variant already ran) would skip its prefill.
        "enable_prefix_caching": False,
    }


@dataclass(frozen=True)
class StartedEngine:
    """An engine and what starting it cost (loading, profiling, compiling, warm-up)."""

    llm: Any
    startup_s: float


def start_engine(settings: dict[str, Any]) -> StartedEngine:
    """``LLM(**settings)``, timed, compiling from empty caches.

    vLLM and Inductor keep compiled code on disk between runs; each engine gets fresh, empty
    cache folders so that its start-up time is the cold one a new server pays, and no engine
    reuses code another compiled."""
    from vllm import LLM

    cache_root = Path(tempfile.mkdtemp(prefix="polar-bench-cache-"))
    atexit.register(shutil.rmtree, cache_root, ignore_errors=True)
    os.environ["VLLM_CACHE_ROOT"] = str(cache_root / "vllm")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_root / "inductor")
    reread_environment()  # an engine that ran in this process froze vLLM's view of it
    start = time.perf_counter()
    llm = LLM(**settings)
    return StartedEngine(llm, time.perf_counter() - start)


def study_labels(model: str) -> Path | None:
    """The label file of the shipped oracle study of ``model`` (``configs/search/*_study.yaml``),
    or ``None`` if no study config names it."""
    for path in sorted(STUDY_CONFIGS.glob("*_study.yaml")):
        config = load_search_config(path)
        if config.model == model:
            return REPOSITORY / config.labels_path
    return None


def mix_programs(mix: str, depth: int, count: int, args: argparse.Namespace) -> list[Program]:
    """The program of each of ``count`` requests under ``mix``, interleaved."""
    if mix == "mixed":
        pool = random_polar_programs(depth, 8, args.seed)
    else:
        pool = list(label_programs(args.labels, depth))
    return [pool[index % len(pool)] for index in range(count)]


def write_result(results: dict[str, Any], path: Path) -> Path:
    """Write a benchmark's ``results`` as indented JSON to ``path`` (folders made as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return path
