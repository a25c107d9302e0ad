"""Per-request programs on the Qwen3, Mistral and Gemma 3 families, in the real vLLM engine
(CPU build, float32), on tiny random-weight models built with ``transformers``.

The checks of the Llama/Qwen2 suite, per family: a batch of mixed programs matches the
transformers reference executor, the full program equals stock vLLM exactly, a bad program
fails alone. Gemma 3 interleaves sliding-window layers (window 8) with global ones and its
prompts are longer than the window, so the window matters; its extra-pass slots keep their
layer's window and its KV-cache groups their layer's attention type.

One family's engines at a time: stock vLLM runs first (its outputs kept), then PoLar. The
engine core runs in the test process, so its scheduler can be inspected."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_checks import compare_with_reference, finish_requests, generate, vllm_engine
from tiny_models import TINY_FAMILIES, build_tiny_model

from polar_vllm.executor.reference import layer_types, program_logits
from polar_vllm.program import full_program

DEPTH = 6
MAX_TOKENS = 10
PROGRAMS = (
    "full",
    "",  # the empty program
    "0-5,0-5",  # length 2D
    "0-3,2-5",  # repeat a global and a sliding-window layer (Gemma 3)
    "0-5,5",  # repeat the last layer
    "0,0-1,1-5",  # repeat two one-layer segments
    "0-1,4-5",  # skip two layers
    "1-4,3-4",  # skip the ends, repeat a segment
)
PROMPTS = (
    "Once upon a time, in a small village by the sea, there lived an old fisherman and his sons.",
    "Tom has 7 apples and buys 5 more. Then he gives 3 to Anna and eats one. How many are left?",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) +",
    "The three primary colors are red, yellow and blue, and mixing any two of them gives",
)
ENGINE_SETTINGS = {"max_model_len": 256, "block_size": 32, "enable_prefix_caching": True}


@pytest.fixture(scope="module", params=sorted(TINY_FAMILIES))
def family(request: Any) -> str:
    return request.param


@pytest.fixture(scope="module")
def family_dir(family: str, tmp_path_factory: Any, smollm2_dir: str) -> str:
    target = tmp_path_factory.mktemp(f"tiny-{family}")
    return str(build_tiny_model(family, target, Path(smollm2_dir)))


@pytest.fixture(scope="module")
def reference(family_dir: str) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(family_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def stock_tokens(family_dir: str) -> list[list[int]]:
    """Stock vLLM's greedy tokens for :data:`PROMPTS` (its engine is shut down after)."""
    with vllm_engine(family_dir, in_process=True, **ENGINE_SETTINGS) as llm:
        outputs = generate(llm, [(prompt, None) for prompt in PROMPTS], MAX_TOKENS)
    return [list(output.outputs[0].token_ids) for output in outputs]


@pytest.fixture(scope="module")
def family_llm(family_dir: str, stock_tokens: list[list[int]]) -> Iterator[Any]:
    """PoLar vLLM on the family's tiny model, default settings (every layer may run twice)."""
    with vllm_engine(
        family_dir, in_process=True, additional_config={"polar": {}}, **ENGINE_SETTINGS
    ) as llm:
        yield llm


def test_kv_group_layers_mixing_attention_types_is_refused(tmp_path, smollm2_dir):
    """Gemma 3's layers alternate sliding, sliding, global: groups of 2 layers would put a
    global and a sliding-window layer in one KV-cache group, which the allocator cannot
    honour, so the engine refuses to start, naming the setting. It runs first, while no
    other engine runs in this process (see ``engine_checks.vllm_engine``)."""
    directory = str(build_tiny_model("gemma3", tmp_path / "gemma3", Path(smollm2_dir)))
    polar = {"polar": {"kv_group_layers": 2}}
    with (
        pytest.raises(Exception, match=r"kv_group_layers=2 puts layers \[2, 3\]"),
        vllm_engine(directory, in_process=True, additional_config=polar, **ENGINE_SETTINGS),
    ):
        pass


def _slot_windows(model: Any) -> dict[str, Any]:
    layers = model.model.layers
    slots = model.model.polar_slots
    return {
        "class": type(model).__name__,
        "layers": [layer.self_attn.attn.sliding_window for layer in layers],
        "slots": {int(name): slot.sliding_window for name, slot in slots.items()},
    }


def test_polar_class_with_windowed_slots(family, family_llm, reference):
    (summary,) = family_llm.apply_model(_slot_windows)
    config = reference.config
    windows = [
        config.sliding_window if kind == "sliding_attention" else None
        for kind in layer_types(config)
    ]
    assert summary["class"] == f"Polar{TINY_FAMILIES[family].architecture}"
    assert summary["layers"] == windows
    assert summary["slots"] == {DEPTH + layer: window for layer, window in enumerate(windows)}
    assert (family == "gemma3") == (8 in windows and None in windows)


def test_kv_cache_groups_keep_each_layers_attention_type(family_llm, reference):
    from vllm.v1.kv_cache_interface import FullAttentionSpec, SlidingWindowSpec

    from polar_vllm.compat.attention_slots import slot_of_layer_name
    from polar_vllm.compat.kv_cache_manager import (
        ProgramGroupManager,
        ProgramSlidingWindowManager,
    )

    scheduler = family_llm.llm_engine.engine_core.engine_core.scheduler
    groups = scheduler.kv_cache_config.kv_cache_groups
    managers = scheduler.kv_cache_manager.coordinator.single_type_managers
    kinds = layer_types(reference.config)
    assert len(groups) == 2 * DEPTH
    expected = {
        "full_attention": (FullAttentionSpec, ProgramGroupManager),
        "sliding_attention": (SlidingWindowSpec, ProgramSlidingWindowManager),
    }
    for group, manager in zip(groups, managers, strict=True):
        (name,) = group.layer_names
        layer, _ = slot_of_layer_name(name, DEPTH)
        spec_type, manager_type = expected[kinds[layer]]
        assert type(group.kv_cache_spec) is spec_type
        assert type(manager) is manager_type


def test_mixed_program_batch_matches_reference(family, family_llm, reference):
    tokenizer = family_llm.get_tokenizer()
    if family == "gemma3":
        window = reference.config.sliding_window
        assert all(len(tokenizer(prompt).input_ids) > 2 * window for prompt in PROMPTS)
        ids = tokenizer(PROMPTS[0], return_tensors="pt").input_ids
        windowed = program_logits(reference, ids, full_program(DEPTH))
        reference.config.sliding_window = 10_000
        try:
            unwindowed = program_logits(reference, ids, full_program(DEPTH))
        finally:
            reference.config.sliding_window = window
        assert not torch.allclose(windowed[0, -1], unwindowed[0, -1], atol=1e-3)
    requests = [(prompt, program) for program in PROGRAMS for prompt in PROMPTS]
    outputs = generate(family_llm, requests, MAX_TOKENS)
    comparison = compare_with_reference(
        reference, tokenizer.eos_token_id, [p for _, p in requests], outputs, MAX_TOKENS
    )
    print(f"{family}: agreement {comparison.agreement:.4f} of {comparison.total_tokens} tokens")
    assert comparison.total_tokens >= len(requests) * 5
    assert comparison.agreement >= 0.99, comparison.mismatches
    distinct = {tuple(output.outputs[0].token_ids) for output in outputs[: len(PROMPTS) * 3]}
    assert len(distinct) >= len(PROMPTS) * 2  # programs change the output


def test_full_program_equals_stock_vllm_exactly(family_llm, stock_tokens):
    for program in ("full", "0-5", None):
        outputs = generate(family_llm, [(prompt, program) for prompt in PROMPTS], MAX_TOKENS)
        assert [list(output.outputs[0].token_ids) for output in outputs] == stock_tokens


def test_bad_program_fails_alone(family_llm):
    from vllm import SamplingParams

    def params(program: str) -> Any:
        extra_args = {"polar_program": program}
        return SamplingParams(max_tokens=6, temperature=0, ignore_eos=True, extra_args=extra_args)

    engine = family_llm.llm_engine
    good = {"good-loop": "0-3,2-5", "good-full": "full"}
    for request_id, program in good.items():
        engine.add_request(request_id, PROMPTS[0], params(program))
    with pytest.raises(ValueError, match="depth 6"):
        engine.add_request("bad", PROMPTS[0], params("0-6"))
    finished = finish_requests(engine)
    assert sorted(finished) == sorted(good)
    assert all(len(output.outputs[0].token_ids) == 6 for output in finished.values())
