"""Stopping an offline ``vllm.LLM``'s engine process now (vLLM 0.32)."""

from __future__ import annotations

from typing import Any

__all__ = ["shutdown_engine"]


def shutdown_engine(llm: Any) -> None:
    """Stop ``llm``'s engine core process at once, instead of at interpreter exit, so that a
    process can run engines one after another without holding two models in memory."""
    llm.llm_engine.engine_core.shutdown()
