"""The registration table of PoLar model families, the decoder contract, and the refusal of
other architectures (no engine starts: vLLM refuses at engine configuration)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from polar_vllm.models import POLAR_ARCHITECTURES, POLAR_FAMILIES
from polar_vllm.models.contract import DecoderContractError, check_decoder_contract
from polar_vllm.models.polar_decoder import PolarCausalLMMixin


def _load(class_path: str) -> type:
    module, name = class_path.split(":")
    return getattr(importlib.import_module(module), name)


def test_every_family_is_vllms_own_class_with_the_mixin():
    assert {"Qwen3ForCausalLM", "MistralForCausalLM", "Gemma3ForCausalLM"} <= set(
        POLAR_ARCHITECTURES
    )
    for family in POLAR_FAMILIES:
        polar_class = _load(family.class_path)
        mixin, vllm_class = polar_class.__mro__[1:3]
        assert mixin is PolarCausalLMMixin
        assert vllm_class.__name__ == family.architecture
        assert vllm_class.__module__.startswith("vllm.model_executor.models.")
        assert polar_class.__name__ == family.polar_name == f"Polar{family.architecture}"
        # Nothing of its own: the mixin's loop on vLLM's class.
        assert not [name for name in vars(polar_class) if not name.startswith("_")]


def test_a_decoder_off_the_contract_is_refused_naming_what_is_missing():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
    )
    model = LlamaForCausalLM(config)  # transformers' decoder, not vLLM's
    with pytest.raises(DecoderContractError) as error:
        check_decoder_contract(model)
    message = str(error.value)
    assert "LlamaForCausalLM" in message
    assert ".model.embed_input_ids" in message
    assert "a vLLM Attention at .self_attn.attn" in message
    assert "forward(positions, hidden_states, residual), found forward(hidden_states" in message
    with pytest.raises(DecoderContractError, match="no decoder at"):
        check_decoder_contract(torch.nn.Linear(2, 2))


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: Any, smollm2_dir: str) -> Path:
    """A tiny GPT-2 (an architecture vLLM serves and PoLar does not) with SmolLM2's tokenizer."""
    import shutil

    from transformers import GPT2Config, GPT2LMHeadModel

    target = tmp_path_factory.mktemp("tiny-gpt2")
    config = GPT2Config(vocab_size=49152, n_embd=64, n_layer=2, n_head=2, n_positions=128)
    GPT2LMHeadModel(config).save_pretrained(target)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(smollm2_dir) / name, target / name)
    return target


def test_other_architectures_are_refused_naming_the_supported_ones(gpt2_dir):
    from vllm.engine.arg_utils import EngineArgs

    import polar_vllm

    polar_vllm.register()
    args = EngineArgs(model=str(gpt2_dir), additional_config={"polar": {}}, max_model_len=64)
    with pytest.raises(ValueError) as error:
        args.create_engine_config()
    message = str(error.value)
    assert "PoLar does not support the architecture GPT2LMHeadModel" in message
    for family in POLAR_FAMILIES:
        assert family.architecture in message
    assert "docs/model_families.md" in message


def test_polar_engine_config_raises_the_onednn_cache_unless_set(smollm2_dir, monkeypatch):
    """A PoLar engine asks oneDNN for room for its partial steps' GEMM shapes; a stock engine
    and a user's own setting are left alone."""
    from vllm.engine.arg_utils import EngineArgs

    import polar_vllm
    from polar_vllm.compat.engine_args import ONEDNN_CACHE_ENV, POLAR_ONEDNN_CACHE

    polar_vllm.register()
    monkeypatch.delenv(ONEDNN_CACHE_ENV, raising=False)
    EngineArgs(model=smollm2_dir, max_model_len=64).create_engine_config()
    assert ONEDNN_CACHE_ENV not in os.environ
    polar = {"model": smollm2_dir, "additional_config": {"polar": {}}, "max_model_len": 64}
    EngineArgs(**polar).create_engine_config()
    assert os.environ[ONEDNN_CACHE_ENV] == str(POLAR_ONEDNN_CACHE)
    monkeypatch.setenv(ONEDNN_CACHE_ENV, "2048")
    EngineArgs(**polar).create_engine_config()
    assert os.environ[ONEDNN_CACHE_ENV] == "2048"
