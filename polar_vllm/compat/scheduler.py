"""The program-aware scheduler (vLLM 0.32): vLLM's scheduler with the waiting queue
reordered by :func:`polar_vllm.engine.batching.program_aware_order` before each step; no waiting
request is passed over by later arrivals for longer than the ``max_delay_s`` setting. An idle
engine holds admission while a burst of requests is still arriving (at most the
``admission_window_s`` setting; :func:`polar_vllm.engine.batching.gathering_burst`), running
empty steps.

Selected with ``additional_config["polar"]["scheduling"] = "program_aware"`` (the engine
configuration hook sets ``scheduler_cls``). Requests that already hold KV blocks (preempted
or partly prefilled) keep their place at the front.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from vllm.v1.core.sched.interface import PauseState
from vllm.v1.core.sched.request_queue import FCFSRequestQueue
from vllm.v1.core.sched.scheduler import Scheduler

from polar_vllm.engine.batching import BURST_QUIET_S, gathering_burst, program_aware_order
from polar_vllm.engine.config import PolarConfig, polar_settings
from polar_vllm.engine.request_programs import request_program
from polar_vllm.program import Program

__all__ = ["ProgramAwareScheduler"]


class ProgramAwareScheduler(Scheduler):
    """vLLM's scheduler, admitting waiting requests that share layers with the batch first."""

    @functools.cached_property
    def polar_config(self) -> PolarConfig:
        """The PoLar settings of the served model."""
        depth = self.vllm_config.model_config.hf_config.get_text_config().num_hidden_layers
        return PolarConfig.from_dict(polar_settings(self.vllm_config.additional_config), depth)

    def _program_of(self, request: Any) -> Program:
        params = request.sampling_params
        return request_program(params.extra_args if params else None, self.polar_config)

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        """Reorder the waiting queue by program, then schedule as vLLM does (nothing new while
        an idle engine gathers a burst)."""
        if self._gathering_burst():
            return self._schedule_without_admission(*args, **kwargs)
        free_slots = self.max_num_running_reqs - len(self.running)
        if isinstance(self.waiting, FCFSRequestQueue) and 0 < free_slots < len(self.waiting):
            started = [r for r in self.waiting if r.num_computed_tokens > 0]
            fresh = [r for r in self.waiting if r.num_computed_tokens == 0]
            ordered = program_aware_order(
                fresh,
                [self._program_of(request) for request in self.running],
                self._program_of,
                lambda request: request.arrival_time,
                time.time(),
                self.polar_config.max_delay_s,
                free_slots - len(started),
            )
            self.waiting.clear()
            self.waiting.extend([*started, *ordered])
        return super().schedule(*args, **kwargs)

    def _gathering_burst(self) -> bool:
        """Nothing runs or holds KV blocks, and fresh requests are still arriving."""
        if self.running or self.kv_holding_waiting or self.pause_state != PauseState.UNPAUSED:
            return False
        if not isinstance(self.waiting, FCFSRequestQueue):
            return False
        if any(request.num_computed_tokens > 0 for request in self.waiting):
            return False
        arrivals = [request.arrival_time for request in self.waiting]
        return gathering_burst(arrivals, time.time(), self.polar_config.admission_window_s)

    def _schedule_without_admission(self, *args: Any, **kwargs: Any) -> Any:
        """vLLM's schedule with new requests paused: an empty step. Sleeps a quarter of the
        quiet time first, so that the engine loop polls for arrivals without spinning."""
        time.sleep(BURST_QUIET_S / 4)
        self._pause_state = PauseState.PAUSED_NEW
        try:
            return super().schedule(*args, **kwargs)
        finally:
            self._pause_state = PauseState.UNPAUSED
