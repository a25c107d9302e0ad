"""The served layer-token cost model and the pricing of dense-labelled candidates."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from polar_vllm.data import SYSTEM_PROMPT, build_prompt
from polar_vllm.predictor.served_cost import (
    candidate_costs,
    head_layers,
    layer_weight_bytes,
    request_cost,
    workload_cost,
)
from polar_vllm.program import full_program
from polar_vllm.search import write_label_records
from polar_vllm.search.labels import LabelRecord
from polar_vllm.search.store import Evaluation, EvaluationStore


def test_layer_weight_bytes_match_the_checkpoint(smollm2_dir):
    from safetensors import safe_open
    from transformers import AutoConfig

    with safe_open(next(Path(smollm2_dir).glob("*.safetensors")), "pt") as checkpoint:
        names = [name for name in list(checkpoint.keys()) if name.startswith("model.layers.0.")]
        numel = sum(math.prod(checkpoint.get_slice(name).get_shape()) for name in names)
    config = AutoConfig.from_pretrained(smollm2_dir)
    assert layer_weight_bytes(config, 4) == 4 * numel


def test_cost_counts_layers_per_token_and_the_head_per_generated_token(smollm2_dir):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(smollm2_dir)
    head = head_layers(config)
    assert head == pytest.approx(
        config.vocab_size * config.hidden_size / layer_weight_bytes(config, 1)
    )
    # 10 prompt tokens and 3 generated: 12 tokens pass the layers, the head runs 3 times.
    assert request_cost(20, 10, 3, head) == pytest.approx(20 * 12 + 3 * head)
    assert workload_cost([20, 30], [10, 5], [3, 1], head) == pytest.approx(
        20 * 12 + 3 * head + 30 * 5 + head
    )
    with pytest.raises(ValueError, match="at least one token"):
        request_cost(20, 10, 0, head)


def test_candidates_are_priced_from_the_stored_answers(tmp_path, smollm2_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    depth, max_tokens, head = 30, 12, 5.0
    full, short = full_program(depth), tuple(range(28))
    meta = {"model": "smollm2-135m", "system_prompt": SYSTEM_PROMPT, "chat_template": True,
            "max_tokens": max_tokens}  # fmt: skip
    store = EvaluationStore(tmp_path / "evaluations.jsonl", meta)
    rambling = "To solve this problem, we need to add the numbers one by one carefully"
    store.add(
        [
            Evaluation("q1", full, True, "7", "7"),
            Evaluation("q1", short, False, None, rambling),
            Evaluation("q2", full, False, "3", "3"),
            Evaluation("q2", short, True, "4", "4"),
        ]
    )
    questions = {"q1": "Tom has 3 apples and buys 4 more. How many now?", "q2": "What is 2+2?"}
    records = [
        LabelRecord(qid, text, "7" if qid == "q1" else "4", 1, "smollm2-135m", depth, True,
                    ((full, qid == "q1"), (short, qid == "q2")))
        for qid, text in questions.items()
    ]  # fmt: skip
    labels = tmp_path / "labels.jsonl"
    write_label_records(records, labels)
    priced = candidate_costs(records, (full, short), [str(labels)], tokenizer, head)
    assert priced.max_tokens == max_tokens
    for q, record in enumerate(records):
        prompt = len(tokenizer(build_prompt(record.question, tokenizer))["input_ids"])
        for c, (program, text) in enumerate(
            ((full, "7" if q == 0 else "3"), (short, rambling if q == 0 else "4"))
        ):
            answer = min(
                len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1, max_tokens
            )
            expected = request_cost(len(program), prompt, answer, head)
            assert priced.cost[q, c] == pytest.approx(expected)
    # the rambling answer ran to max_tokens: the skipping program costs more than the full one
    assert priced.at_max.tolist() == [[False, True], [False, False]]
    assert priced.cost[0, 1] > priced.cost[0, 0] and priced.cost[1, 1] < priced.cost[1, 0]
    # label files made with another answer budget cannot be priced together
    other = EvaluationStore(tmp_path / "other" / "evaluations.jsonl", {**meta, "max_tokens": 16})
    other.add([Evaluation("q3", full, True, "1", "1")])
    with pytest.raises(ValueError, match="cannot be priced together"):
        candidate_costs(
            records, (full, short), [str(labels), str(tmp_path / "other" / "labels.jsonl")],
            tokenizer, head,
        )  # fmt: skip
    with pytest.raises(FileNotFoundError, match="answers of the dense labels"):
        candidate_costs(records, (full, short), [str(tmp_path / "x" / "l.jsonl")], tokenizer, 1.0)
