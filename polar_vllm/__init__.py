"""polar-vllm: Program-of-Layers (PoLar) per-request layer programs for vLLM."""

__version__ = "0.1.0"


def register() -> None:
    """vLLM general-plugin entry point (``vllm.general_plugins: polar``).

    vLLM calls it in every process it starts. It registers the PoLar model classes (under
    their own architecture names, which only a PoLar configuration selects) and installs the
    version-specific hooks of :mod:`polar_vllm.compat`, each of which does nothing unless
    ``additional_config["polar"]`` is present: with PoLar off, vLLM behaves exactly as stock,
    except for one deliberate fix that stock models get too (seeded sampling with chunked
    prefill on CPU, :mod:`polar_vllm.compat.seeded_sampling`).
    """
    from vllm import ModelRegistry

    from polar_vllm import compat
    from polar_vllm.models import POLAR_ARCHITECTURES

    supported = set(ModelRegistry.get_supported_archs())
    for polar_name, class_path in POLAR_ARCHITECTURES.values():
        if polar_name not in supported:
            ModelRegistry.register_model(polar_name, class_path)
    compat.install()
