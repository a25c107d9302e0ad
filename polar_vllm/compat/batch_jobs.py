"""Offline batch jobs (search, evaluation) on vLLM's CPU build: environment defaults.

vLLM 0.32's CPU worker reserves one core for the serving process by default and binds its
OpenMP threads to the rest, so on a 2-core machine a batch job would compute on one core. An
offline job has no server to keep responsive, so it gives the worker every core. Variables
the user set win.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["batch_job_environment", "batch_job_llm"]


def batch_job_environment(kv_cache_gib: int = 2) -> None:
    """Set the CPU build's defaults for an offline batch job (no-op for variables already set)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


def batch_job_llm(
    model_dir: str, dtype: str, polar: dict[str, Any] | None = None, **engine_args: Any
) -> Any:
    """A PoLar-enabled vLLM ``LLM`` for an offline batch job, in the batch-job environment.

    ``polar`` is ``additional_config["polar"]`` (default settings when ``None``); the other
    keyword arguments go to ``LLM`` as they are.
    """
    from vllm import LLM

    batch_job_environment()
    return LLM(
        model=model_dir,
        additional_config={"polar": dict(polar or {})},
        enforce_eager=True,
        dtype=dtype,
        **engine_args,
    )
