"""PoLar model class of the Llama family (Llama 2/3, SmolLM2, ...)."""

from vllm.model_executor.models.llama import LlamaForCausalLM

from polar_vllm.models.polar_decoder import PolarCausalLMMixin


class PolarLlamaForCausalLM(PolarCausalLMMixin, LlamaForCausalLM):
    """``LlamaForCausalLM`` whose forward runs each request's layer program."""
