"""PoLar model class of the Mistral family."""

from vllm.model_executor.models.mistral import MistralForCausalLM

from polar_vllm.models.polar_decoder import PolarCausalLMMixin


class PolarMistralForCausalLM(PolarCausalLMMixin, MistralForCausalLM):
    """``MistralForCausalLM`` whose forward runs each request's layer program."""
