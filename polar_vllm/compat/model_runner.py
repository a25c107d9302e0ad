"""Carry each request's program from the model runner to the PoLar model (vLLM 0.32).

:func:`polar_model_forward` wraps ``GPUModelRunner._model_forward`` (which the CPU runner
inherits): when the model is a PoLar model, it publishes the programs and scheduled token
counts of the batch's requests, in the batch's order, for the duration of the forward. Other
models are called exactly as before.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from polar_vllm.engine.config import PolarConfig
from polar_vllm.engine.request_programs import PolarBatch, request_program
from polar_vllm.program import Program

__all__ = ["polar_model_forward"]


def batch_programs(runner: Any, config: PolarConfig) -> tuple[list[Program], list[int]]:
    """Programs and scheduled token counts of the runner's current batch, in batch order."""
    num_requests = runner.input_batch.num_reqs
    request_ids = runner.input_batch.req_ids[:num_requests]
    query_lens = np.diff(runner.query_start_loc.np[: num_requests + 1]).tolist()
    programs = [
        request_program(runner.requests[request_id].sampling_params.extra_args, config)
        for request_id in request_ids
    ]
    return programs, query_lens


def polar_model_forward(model_forward: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``_model_forward`` so a PoLar model sees the batch's programs."""

    @functools.wraps(model_forward)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        model = self.get_model()
        if not hasattr(model, "polar_batch"):
            return model_forward(self, *args, **kwargs)
        programs, query_lens = batch_programs(self, model.polar_config)
        with model.polar_batch(PolarBatch(programs, query_lens)):
            return model_forward(self, *args, **kwargs)

    return wrapper
