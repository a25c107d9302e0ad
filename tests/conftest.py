"""Shared fixtures: the bundled model, its transformers reference, and vLLM engines.

Engines are expensive on CPU (30-50 s to start in vLLM's default layout, minutes to compile),
so each is created once per module or session and shut down explicitly. The session's engines
run in processes of their own; a module's engine that lives alone runs in the test process
(``vllm_engine(..., in_process=True)``), which saves the engine and worker processes' start."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from engine_checks import vllm_engine

from polar_vllm.models.bundled import prepare_model

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
# apply_model() ships a test function to the engine process, which needs pickling.
os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")


@pytest.fixture(scope="session")
def smollm2_dir() -> str:
    """Directory of the prepared bundled SmolLM2-135M model."""
    return str(prepare_model("smollm2-135m"))


@pytest.fixture(scope="session")
def reference_model(smollm2_dir: str) -> Any:
    """SmolLM2 in transformers, float32, for the reference executor."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def tokenizer(smollm2_dir: str) -> Any:
    """SmolLM2's tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="session")
def stock_llm(smollm2_dir: str) -> Iterator[Any]:
    """Stock vLLM (PoLar off) on SmolLM2, float32."""
    with vllm_engine(smollm2_dir) as llm:
        yield llm


@pytest.fixture(scope="session")
def polar_llm(smollm2_dir: str) -> Iterator[Any]:
    """PoLar vLLM on SmolLM2 with the default settings (every layer may run twice), float32."""
    with vllm_engine(smollm2_dir, additional_config={"polar": {}}) as llm:
        yield llm
