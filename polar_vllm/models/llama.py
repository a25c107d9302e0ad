"""PoLar model class of the Llama family (Llama, SmolLM2, ...)."""

from __future__ import annotations

from typing import Any

from vllm.model_executor.models.llama import LlamaForCausalLM

from polar_vllm.models.polar_decoder import PolarCausalLMMixin


class PolarLlamaForCausalLM(PolarCausalLMMixin, LlamaForCausalLM):
    """``LlamaForCausalLM`` whose forward runs each request's layer program."""

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.init_polar(vllm_config, prefix)
