"""PoLar model class of Gemma 3, text only (sliding-window layers interleaved with global ones)."""

from vllm.model_executor.models.gemma3 import Gemma3ForCausalLM

from polar_vllm.models.polar_decoder import PolarCausalLMMixin


class PolarGemma3ForCausalLM(PolarCausalLMMixin, Gemma3ForCausalLM):
    """``Gemma3ForCausalLM`` whose forward runs each request's layer program."""
