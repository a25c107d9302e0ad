"""PoLar model class of the Qwen2 family (Qwen2, Qwen2.5, Qwen2.5-Coder, ...)."""

from __future__ import annotations

from typing import Any

from vllm.model_executor.models.qwen2 import Qwen2ForCausalLM

from polar_vllm.models.polar_decoder import PolarCausalLMMixin


class PolarQwen2ForCausalLM(PolarCausalLMMixin, Qwen2ForCausalLM):
    """``Qwen2ForCausalLM`` whose forward runs each request's layer program."""

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.init_polar(vllm_config, prefix)
