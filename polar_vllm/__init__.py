"""polar-vllm: Program-of-Layers (PoLar) per-request layer programs for vLLM."""

__version__ = "0.1.0"


def register() -> None:
    """vLLM general-plugin entry point (``vllm.general_plugins: polar``).

    vLLM calls it in every process it starts. With PoLar not enabled it must leave
    vLLM exactly as stock, so it changes nothing unless a PoLar configuration is
    present; the PoLar model classes hook in here as they land."""
