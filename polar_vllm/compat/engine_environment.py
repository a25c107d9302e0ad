"""vLLM's environment as offline engines see it (vLLM 0.32): which process an engine runs in,
and environment changes between engines that start in one process."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["engine_process", "reread_environment"]

MULTIPROCESSING_VARIABLE = "VLLM_ENABLE_V1_MULTIPROCESSING"


def reread_environment() -> None:
    """Make vLLM read its environment variables afresh.

    An engine that starts in this process freezes vLLM's cache of them (``envs``): without
    this, a variable set for a later engine (a cache folder, the engine layout) is ignored."""
    from vllm import envs

    envs.disable_envs_cache()


@contextlib.contextmanager
def engine_process(in_process: bool) -> Iterator[None]:
    """``vllm.LLM`` engines created in this block run in this process (``in_process``: no
    engine or worker process to spawn, and the scheduler and model are reachable) or in an
    engine process of their own, vLLM's default. The variable is restored after the block."""
    previous = os.environ.get(MULTIPROCESSING_VARIABLE)
    os.environ[MULTIPROCESSING_VARIABLE] = "0" if in_process else "1"
    reread_environment()
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(MULTIPROCESSING_VARIABLE, None)
        else:
            os.environ[MULTIPROCESSING_VARIABLE] = previous
        reread_environment()
