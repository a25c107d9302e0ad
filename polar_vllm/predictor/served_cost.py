"""What a served request costs in layer-tokens, and what each candidate program costs on each
dense-labelled question.

On short-prompt workloads served in large batches the decoder layers' GEMMs dominate and every
token costs about the same per layer, prefill or decode. A request whose program runs ``L``
layers, with ``P`` prompt tokens and ``G`` generated tokens, then costs

    L * (P + G - 1) + H * G

layer-tokens: every prompt token and every generated token but the last passes through the
``L`` layers, and the LM head runs once per generated token. ``H`` is the head's weights over
one decoder layer's: Qwen2.5-Coder-0.5B's 151,936 x 896 head weighs as much as 9.1 of its
layers, so for short answers the head is a large part of the cost and skipped layers save
less than ``L / D``. Attention over the cached sequence and per-step costs are left out.

So what a program saves depends on the answer it makes the model write as well as on its
layers: a program that skips layers but makes the model ramble to ``max_tokens`` can cost more
than the full program. Dense labels store every candidate's answer text
(``evaluations.jsonl`` beside each label file), so :func:`candidate_costs` prices every
candidate on every labelled question by lookup.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from polar_vllm.data import build_prompt
from polar_vllm.models.bundled import resolve_model
from polar_vllm.program import Program
from polar_vllm.search.labels import LabelRecord
from polar_vllm.search.store import EvaluationStore

__all__ = [
    "PRICING_META",
    "CandidateCosts",
    "answer_tokens",
    "candidate_costs",
    "head_layers",
    "layer_weight_bytes",
    "pricing",
    "request_cost",
    "workload_cost",
]


def layer_weight_bytes(hf_config: Any, itemsize: int) -> int:
    """Bytes of one decoder layer's weights: QKV, output projection, gated MLP and two norms."""
    hidden = hf_config.hidden_size
    head_dim = getattr(hf_config, "head_dim", None) or hidden // hf_config.num_attention_heads
    q_size = hf_config.num_attention_heads * head_dim
    kv_size = hf_config.num_key_value_heads * head_dim
    attention = hidden * (q_size + 2 * kv_size) + q_size * hidden
    if getattr(hf_config, "attention_bias", False) or hf_config.model_type == "qwen2":
        attention += q_size + 2 * kv_size  # QKV biases
    mlp = 3 * hidden * hf_config.intermediate_size
    return (attention + mlp + 2 * hidden) * itemsize


def head_layers(hf_config: Any) -> float:
    """The LM head's weights over one decoder layer's, from a Hugging Face model config."""
    return hf_config.vocab_size * hf_config.hidden_size / layer_weight_bytes(hf_config, 1)


def request_cost(layers: int, prompt_tokens: int, generated_tokens: int, head: float) -> float:
    """Layer-tokens of one request (see the module docstring)."""
    if generated_tokens < 1:
        raise ValueError(f"a served request generates at least one token, got {generated_tokens}")
    return layers * (prompt_tokens + generated_tokens - 1) + head * generated_tokens


def workload_cost(
    layers: Sequence[int],
    prompt_tokens: Sequence[int],
    generated_tokens: Sequence[int],
    head: float,
) -> float:
    """Layer-tokens of a workload: the sum of its requests' :func:`request_cost`."""
    return sum(
        request_cost(n, p, g, head)
        for n, p, g in zip(layers, prompt_tokens, generated_tokens, strict=True)
    )


def _evaluations_meta(label_path: str) -> tuple[Path, dict[str, Any]]:
    path = Path(label_path).parent / "evaluations.jsonl"
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: the answers of the dense labels {label_path} are needed to cost them"
        )
    with path.open(encoding="utf-8") as f:
        return path, json.loads(f.readline())["meta"]


PRICING_META = ("max_tokens", "system_prompt", "chat_template")
"""The settings of a dense label run that shape what its answers cost: every label file priced
together must share them."""


def answer_tokens(
    label_paths: Sequence[str], tokenizer: Any
) -> tuple[dict[tuple, int], dict[str, Any]]:
    """Generated tokens of every stored (question id, program) answer of the dense label files
    (their ``evaluations.jsonl``), and the meta record they were made with (its
    :data:`PRICING_META` settings the same in every file)."""
    if not label_paths:
        raise ValueError("no dense label files to cost")
    tokens: dict[tuple, int] = {}
    first_path, first = _evaluations_meta(label_paths[0])
    for label_path in label_paths:
        path, meta = _evaluations_meta(label_path)
        if any(meta.get(key) != first.get(key) for key in PRICING_META):
            raise ValueError(
                f"{path} was made with other {'/'.join(PRICING_META)} than {first_path}: "
                "they cannot be priced together"
            )
        max_tokens = int(meta["max_tokens"])
        evaluations = list(EvaluationStore(path, meta))
        ids = tokenizer([e.text for e in evaluations], add_special_tokens=False)["input_ids"]
        for evaluation, text_ids in zip(evaluations, ids, strict=True):
            # The end-of-sequence token is generated too, unless the answer hit max_tokens.
            tokens[(evaluation.question_id, evaluation.program)] = min(
                len(text_ids) + 1, max_tokens
            )
    return tokens, first


def pricing(model: str) -> tuple[Any, float]:
    """The tokenizer of ``model`` (a bundled model name or a directory) and its LM head in
    layers (:func:`head_layers`): what :func:`candidate_costs` prices with."""
    from transformers import AutoConfig, AutoTokenizer

    model_dir = resolve_model(model)
    return AutoTokenizer.from_pretrained(model_dir), head_layers(
        AutoConfig.from_pretrained(model_dir)
    )


@dataclass(frozen=True)
class CandidateCosts:
    """Layer-tokens ``cost`` [Q, C] of every candidate program on every question, and
    ``at_max`` [Q, C]: whether its answer ran to ``max_tokens``."""

    cost: torch.Tensor
    at_max: torch.Tensor
    max_tokens: int


def candidate_costs(
    records: Sequence[LabelRecord],
    programs: Sequence[Program],
    label_paths: Sequence[str],
    tokenizer: Any,
    head: float,
) -> CandidateCosts:
    """Price every candidate of ``programs`` on every record of the dense ``label_paths``: the
    prompt as the labels were made (system prompt and chat template from their meta record),
    the stored answer re-tokenized (:func:`answer_tokens`)."""
    tokens, meta = answer_tokens(label_paths, tokenizer)
    max_tokens = int(meta["max_tokens"])
    template = tokenizer if meta.get("chat_template", True) else None
    prompts = [
        build_prompt(r.question, template, system_prompt=meta["system_prompt"]) for r in records
    ]
    prompt_lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    answers = [[tokens[(r.id, program)] for program in programs] for r in records]
    cost = torch.tensor(
        [
            [
                request_cost(len(program), prompt, answer, head)
                for program, answer in zip(programs, row, strict=True)
            ]
            for prompt, row in zip(prompt_lengths, answers, strict=True)
        ]
    )
    at_max = torch.tensor([[n >= max_tokens for n in row] for row in answers])
    return CandidateCosts(cost, at_max, max_tokens)
