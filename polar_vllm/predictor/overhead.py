"""Per-request predictor overhead: encoder, head and decoding time for a batch of questions."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from polar_vllm.predictor.predict import PredictionTimes, predict_scored
from polar_vllm.predictor.storage import Predictor

__all__ = ["measure_overhead"]


def measure_overhead(
    predictor: Predictor,
    questions: Sequence[str],
    *,
    top_k: int = 1,
    repeats: int = 5,
) -> dict[str, Any]:
    """Milliseconds per request of each predictor stage when ``questions`` come as one batch.

    One untimed warm-up call, then ``repeats`` timed calls; the median of each stage over the
    calls is divided by the number of questions. Returns ``{"batch_size", "repeats",
    "encoder_ms", "head_ms", "decoding_ms", "total_ms"}`` (all per request).
    """
    if not questions or repeats < 1:
        raise ValueError("measure_overhead needs questions and repeats >= 1")
    predict_scored(predictor, questions, top_k=top_k)
    runs = []
    for _ in range(repeats):
        times = PredictionTimes()
        predict_scored(predictor, questions, top_k=top_k, times=times)
        runs.append(times)
    per_request = 1000.0 / len(questions)
    result: dict[str, Any] = {"batch_size": len(questions), "repeats": repeats, "top_k": top_k}
    for stage in ("encoder", "head", "decoding"):
        result[f"{stage}_ms"] = statistics.median(getattr(t, stage) for t in runs) * per_request
    result["total_ms"] = result["encoder_ms"] + result["head_ms"] + result["decoding_ms"]
    return result
