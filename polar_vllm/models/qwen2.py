"""PoLar model class of the Qwen2 family (Qwen2, Qwen2.5, Qwen2.5-Coder, ...)."""

from vllm.model_executor.models.qwen2 import Qwen2ForCausalLM

from polar_vllm.models.polar_decoder import PolarCausalLMMixin


class PolarQwen2ForCausalLM(PolarCausalLMMixin, Qwen2ForCausalLM):
    """``Qwen2ForCausalLM`` whose forward runs each request's layer program."""
