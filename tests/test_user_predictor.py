"""A user's own predictor, end to end with the documented commands (docs/research.md, *A
predictor for your own data*): a JSONL file of questions, dense labels through the engine
(``polar-vllm search``), a candidate predictor trained on them (``polar-vllm train``), and an
engine serving it (``additional_config={"polar": {"predictor": DIR}}``), on SmolLM2."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from engine_checks import generate, vllm_engine

from polar_vllm import polar_program
from polar_vllm.cli.main import main
from polar_vllm.compat.engine_environment import engine_process
from polar_vllm.predictor import load_predictor, predict_programs
from polar_vllm.program import format_program
from polar_vllm.search.labels import read_label_records

QUESTIONS = [
    ("What is 7 + 5?", 12),
    ("Tom has 3 apples and buys 4 more. How many apples does he have?", 7),
    ("What is 9 minus 4?", 5),
    ("A box holds 6 pens. How many pens are in 2 boxes?", 12),
    ("What is 10 + 10?", 20),
    ("Sara had 8 cards and gave away 3. How many are left?", 5),
    ("Compute 4 * 3.", 12),
    ("What is 15 - 6?", 9),
]
MAX_TOKENS = 6
CANDIDATES = ("0-11,13-29", "0-5,5-29", "0-1,6-29", "0-19,24-29")


def test_jsonl_to_served_predictor(tmp_path: Path, smollm2_dir: str, polar_llm) -> None:
    data = tmp_path / "my_questions.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in QUESTIONS))
    search = {
        "model": "smollm2-135m",
        "method": "dense",
        "dense_max_block": 0,  # the full program and these candidates only
        "dense_programs": list(CANDIDATES),
        "data_file": str(data),
        "questions_per_level": len(QUESTIONS),
        "max_tokens": MAX_TOKENS,
        "output_dir": str(tmp_path / "labels"),
    }
    (tmp_path / "dense.yaml").write_text(yaml.safe_dump(search))
    with engine_process(in_process=True):  # the search's engine: no processes to spawn
        main(["search", "--config", str(tmp_path / "dense.yaml"), "--no-progress"])
    records = read_label_records([tmp_path / "labels" / "labels.jsonl"])
    assert [r.question for r in records] == [q for q, _ in QUESTIONS]  # unlevelled: all taken
    assert [format_program(p) for p, _ in records[0].evaluated] == ["0-29", *CANDIDATES]

    run = {
        "model": "smollm2-135m",
        "predictor_dir": str(tmp_path / "predictor"),
        "train": {
            "head": "candidates",
            "labels": [str(tmp_path / "labels" / "labels.jsonl")],
            "val_fraction": 0.25,
            "epochs": 3,
            "batch_size": 4,
        },
    }
    (tmp_path / "predictor.yaml").write_text(yaml.safe_dump(run))
    main(["train", "--config", str(tmp_path / "predictor.yaml")])
    predictor = load_predictor(
        tmp_path / "predictor", expected_depth=30, expected_model=smollm2_dir
    )
    assert predictor.guard is not None  # fitted on the held-out quarter
    # no candidate runs within 0.85 x 30 layers: the accuracy point alone is stored
    assert set(predictor.config.operating_points) == {"accuracy"}
    questions = [q for q, _ in QUESTIONS[:3]]
    expected = [format_program(r[0]) for r in predict_programs(predictor, questions, top_k=1)]

    config = {"polar": {"predictor": str(tmp_path / "predictor")}}
    with vllm_engine(smollm2_dir, in_process=True, additional_config=config) as served:
        for question, program in zip(questions, expected, strict=True):
            resolved = polar_program(served, question)
            assert (resolved.text, resolved.source) == (program, "predictor")
        got = generate(served, [(q, None) for q in questions], MAX_TOKENS)
    want = generate(polar_llm, list(zip(questions, expected, strict=True)), MAX_TOKENS)
    for a, b in zip(got, want, strict=True):
        assert a.outputs[0].token_ids == b.outputs[0].token_ids
