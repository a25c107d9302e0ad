"""PoLar model class of the dense Qwen3 family."""

from vllm.model_executor.models.qwen3 import Qwen3ForCausalLM

from polar_vllm.models.polar_decoder import PolarCausalLMMixin


class PolarQwen3ForCausalLM(PolarCausalLMMixin, Qwen3ForCausalLM):
    """``Qwen3ForCausalLM`` whose forward runs each request's layer program."""
