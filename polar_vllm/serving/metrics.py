"""Prometheus metrics of PoLar requests (exported on vLLM's ``/metrics``)."""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["observe_predictor_failure", "observe_predictor_latency", "observe_request_program"]

_LAYER_BUCKETS = (0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 48, 56, 64, 80, 96, 128)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


@functools.cache
def _metrics() -> dict[str, Any]:
    from prometheus_client import Counter, Histogram

    return {
        "layers": Histogram(
            "polar_executed_layers",
            "Decoder layers each PoLar request runs per token (its program's length).",
            buckets=_LAYER_BUCKETS,
        ),
        "latency": Histogram(
            "polar_predictor_latency_seconds",
            "Time the PoLar predictor took for one batch of prompts.",
            buckets=_LATENCY_BUCKETS,
        ),
        "requests": Counter(
            "polar_requests",
            "PoLar requests by where their program came from.",
            ["source"],
        ),
        "failures": Counter(
            "polar_predictor_failures",
            "Predictions that raised; each such request got the default program instead.",
        ),
    }


def observe_request_program(executed_layers: int, source: str) -> None:
    """Record an accepted request: its program length and its program's source."""
    metrics = _metrics()
    metrics["layers"].observe(executed_layers)
    metrics["requests"].labels(source=source).inc()


def observe_predictor_latency(seconds: float) -> None:
    """Record one predictor call (a batch of prompts)."""
    _metrics()["latency"].observe(seconds)


def observe_predictor_failure() -> None:
    """Record a request whose prediction raised (it falls back to the default program)."""
    _metrics()["failures"].inc()
