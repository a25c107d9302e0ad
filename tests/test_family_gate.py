"""The out-of-distribution gate chosen on held-out wording families: the rule on known
scores, and the whole leave-one-family-out fit through ``polar-vllm train`` on toy labels."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from polar_vllm.cli.main import main
from polar_vllm.data import MathProblem
from polar_vllm.data.wordings import family_of
from polar_vllm.predictor import load_predictor
from polar_vllm.predictor.candidate_training import GUARD_CHOICE_FILE
from polar_vllm.predictor.eval_run import gate_fires
from polar_vllm.predictor.evaluation import EvalItem
from polar_vllm.predictor.familiarity import (
    FamiliarityGuard,
    embed_questions,
    load_guard,
    question_words,
    save_guard,
)
from polar_vllm.predictor.family_gate import (
    FALLBACKS,
    HeldOutFamily,
    choose_gate,
    choose_word_fallback,
)
from polar_vllm.predictor.predict import predict_programs
from polar_vllm.program import parse_program
from polar_vllm.search.labels import LabelRecord

FULL, SKIP, STATIC = 0, 1, 2  # candidate indices of the synthetic families


def _family(name: str, right: list[set[int]], head: list[int], familiarity: list[float]):
    """A held-out family of len(right) questions: ``right[q]`` the candidates right on q,
    ``head[q]`` the head's choice (one operating point), thresholds 0.5 (q 0.1) and 0.9 (q
    0.5)."""
    correct = torch.tensor([[float(c in r) for c in range(3)] for r in right])
    return HeldOutFamily(
        name=name,
        correct=correct,
        choices={"accuracy": torch.tensor(head)},
        familiarity=torch.tensor(familiarity),
        thresholds={0.1: 0.5, 0.5: 0.9},
        fallbacks={
            "full": torch.full((len(right),), FULL),
            "best_static": torch.full((len(right),), STATIC),
            # the static program for the questions right under it, the full one for the rest
            "static_by_words": torch.tensor([STATIC if STATIC in r else FULL for r in right]),
        },
    )


def test_gate_rule_on_known_families() -> None:
    # the head is right on a familiar family: the smallest quantile, nothing falls back
    good = _family("good", [{SKIP}, {SKIP}], [SKIP, SKIP], [0.95, 0.95])
    quantile, fallback, report = choose_gate([good], [0.1, 0.5])
    assert (quantile, fallback) == (0.1, "full")
    assert report["gates"][0]["families"]["good"]["gate_fires"] == 0.0
    # a second family the head gets wrong, less familiar (0.7): only the 0.5 quantile (threshold
    # 0.9) sends it to a fallback; the full program is right there, the static program not
    bad = _family("bad", [{FULL}, {FULL}], [SKIP, SKIP], [0.7, 0.7])
    quantile, fallback, report = choose_gate([good, bad], [0.1, 0.5])
    assert (quantile, fallback) == (0.5, "full")
    rows = {(r["quantile"], r["fallback"]): r for r in report["gates"]}
    assert rows[(0.1, "full")]["families"]["bad"]["accuracy"] == {"accuracy": 0.0}
    assert rows[(0.5, "full")]["families"]["bad"]["gate_fires"] == 1.0
    assert rows[(0.5, "full")]["safe"] and not rows[(0.5, "best_static")]["safe"]
    assert [r["fallback"] for r in report["gates"]] == [f for f in FALLBACKS for _ in "ab"]
    # where the static program is right as well as the full one, it wins by held-out accuracy
    # (the word fallback, here the same choices, ties with it and comes later)
    both = _family("both", [{FULL, STATIC}, {STATIC}], [SKIP, SKIP], [0.7, 0.7])
    assert choose_gate([good, both], [0.1, 0.5])[:2] == (0.5, "best_static")
    # a family that needs the full program on some questions and the static one on others:
    # only the word fallback, choosing per question, is safe and beats both
    mixed = _family("mixed", [{FULL}, {FULL}, {STATIC}], [SKIP] * 3, [0.7] * 3)
    quantile, fallback, report = choose_gate([good, mixed], [0.1, 0.5])
    assert (quantile, fallback) == (0.5, "static_by_words")
    rows = {(r["quantile"], r["fallback"]): r for r in report["gates"]}
    assert not rows[(0.5, "best_static")]["safe"]
    assert rows[(0.5, "static_by_words")]["families"]["mixed"]["accuracy"] == {"accuracy": 1.0}
    # no safe gate: the largest worst margin over the full program
    hopeless = _family("hopeless", [{FULL}, {FULL}], [SKIP, SKIP], [0.95, 0.95])
    quantile, fallback, report = choose_gate([hopeless], [0.1, 0.5])
    assert report["rule"].startswith("no safe gate") and report["gates"][0]["worst_margin"] == -1
    with pytest.raises(ValueError, match="at least one"):
        choose_gate([], [0.1])


def test_word_fallback_rule() -> None:
    # candidates: 0 full, 1 right on long word problems, 2 right on one long question only
    correct = torch.tensor(
        [[1.0, 0.0, 0.0]] * 2  # bare sums, 0 and 2 words: only the full program
        + [[0.0, 1.0, 0.0]] * 3  # word problems of 12 words: candidate 1
        + [[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]]  # 15 and 9 words
    )
    words = torch.tensor([0, 2, 12, 12, 12, 15, 9])
    families = ["terse", "terse", "story", "story", "story", "story", "story"]
    # candidate 1 from 9 words gains 5 questions and costs none (from 2 words terse would lose)
    assert choose_word_fallback(correct, words, families, full_index=0) == (1, 9)
    # a second family whose one question (16 words, the longest) only the full program
    # answers: every count that moves a word problem moves it too, so none is safe
    long_full = torch.cat([correct, torch.tensor([[1.0, 0.0, 0.0]])])
    choice = choose_word_fallback(long_full, torch.cat([words, torch.tensor([16])]),
                                  [*families, "other"], full_index=0)  # fmt: skip
    assert choice is None
    # the same question under candidate 2 as well: candidate 2 from 15 words is safe
    long_both = torch.cat([correct, torch.tensor([[1.0, 0.0, 1.0]])])
    choice = choose_word_fallback(long_both, torch.cat([words, torch.tensor([16])]),
                                  [*families, "other"], full_index=0)  # fmt: skip
    assert choice == (2, 15)
    # nothing gains: every question runs the full program
    assert choose_word_fallback(correct[:2], words[:2], families[:2], full_index=0) is None


def test_question_words_and_the_word_fallback_of_a_guard(tmp_path: Path) -> None:
    assert question_words("27 + 26 = ?") == 0
    assert question_words("Add 14 and 33.") == 2
    assert question_words("Solve for x: 3x + 4 = 19") == 2  # one-letter names do not count
    assert question_words("Ana has 12 coins and finds 5 more. How many coins now?") == 10
    reference = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    guard = FamiliarityGuard(reference, 0.5, 0.3, fallback="0-3,6-7", fallback_min_words=5)
    asked = ["3 + 4", "Ana has 3 coins and finds 4 more."]
    assert guard.takes_fallback(asked) == [False, True]
    assert replace(guard, fallback_min_words=None).takes_fallback(asked) == [True, True]
    assert replace(guard, fallback=None).takes_fallback(asked) == [False, False]
    save_guard(tmp_path, guard)
    loaded = load_guard(tmp_path)
    assert loaded is not None and loaded.fallback_min_words == 5
    assert loaded.fallback == "0-3,6-7" and loaded.threshold == 0.5


TOY_DEPTH = 8
CANDIDATES = ("full", "0-3,6-7", "0-3,2-3,4-7", "0-1,4-7")
APPLE, PEAR = CANDIDATES[1], CANDIDATES[2]
PHRASES = {
    "gen": [
        "{n} has {x} {f} and buys {y} more. How many {f} does {n} have?",
        "A basket holds {x} {f}. {n} adds {y} {f}. How many {f} are in the basket?",
        "{n} picked {x} {f} on Monday and {y} {f} on Tuesday. How many {f} in total?",
    ],
    "terse": ["{x} {f} + {y} {f} = ?", "{x} {f} - {y} {f}", "Compute {x} {f} times {y}."],
    "worksheet": [
        "Fill in the blank: {x} {f} and {y} {f} make __ {f}.",
        "Solve for n: n {f} = {x} {f} plus {y} {f}.",
    ],
}
NAMES = ["Tom", "Maria", "Liam", "Aisha"]


def _record(rid: str, question: str, right: set[str]) -> dict[str, Any]:
    evaluated = tuple((parse_program(p, TOY_DEPTH), p in right) for p in CANDIDATES)
    record = LabelRecord(rid, question, "1", 1, "toy", TOY_DEPTH, "full" in right, evaluated)
    return record.to_json()


def _labels(path: Path, families: list[str], full_only: set[str]) -> Path:
    """Apple questions right under the apple program, pears under the pear one (and the full
    program on one in three), except the families of ``full_only``: there only the full
    program is right."""
    lines = []
    for family in families:
        i = 0
        for name in NAMES:
            for phrase in PHRASES[family]:
                for fruit, program in (("apples", APPLE), ("pears", PEAR)):
                    text = phrase.format(n=name, x=len(name) + 2, y=i % 7 + 2, f=fruit)
                    right = {"full"} if family in full_only else {program}
                    right |= {"full"} if i % 3 == 0 else set()
                    lines.append(json.dumps(_record(f"{family}-L1-s0-{i:05d}", text, right)))
                    i += 1
    path.write_text("\n".join(lines) + "\n")
    return path


def test_gate_chosen_on_held_out_families_through_train(tmp_path: Path) -> None:
    gen = _labels(tmp_path / "gen.jsonl", ["gen"], set())
    families = _labels(tmp_path / "families.jsonl", ["terse", "worksheet"], {"worksheet"})
    settings = {
        "model": "toy",
        "predictor_dir": str(tmp_path / "predictor"),
        "train": {
            "head": "candidates",
            "labels": [str(gen)],
            "family_labels": [str(families)],
            "val_fraction": 0.25,
            "epochs": 8,
            "patience": 2,
            "batch_size": 16,
            "efficiency_layers": 0.9,
            "gate_by_family": True,
        },
    }
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(settings))
    main(["train", "--config", str(run_file)])
    directory = tmp_path / "predictor"
    history = json.loads((directory / "train_history.json").read_text())
    assert len(history["train_loss"]) <= history["best_epoch"] + 2  # patience: 2
    report = json.loads((directory / GUARD_CHOICE_FILE).read_text())
    assert report["held_out_families"] == ["gen", "terse", "worksheet"]
    assert report["not_held_out"] == []  # holding gen out keeps 40 of 64 questions
    chosen = next(
        row
        for row in report["gates"]
        if (row["quantile"], row["fallback"])
        == (report["chosen_quantile"], report["fallback_strategy"])
    )
    worksheet = chosen["families"]["worksheet"]
    assert worksheet["questions"] == len(NAMES) * len(PHRASES["worksheet"]) * 2
    # the held-out worksheet family is right only under the full program, where the head
    # (trained without it) picks the apple or pear program: the gate falls back to the full
    # program on it, and every held-out family keeps at least the full program's accuracy
    assert chosen["safe"] and report["chosen_fallback"] == "full"
    assert worksheet["gate_fires"] == 1.0 and worksheet["accuracy"]["accuracy"] == 1.0
    assert min(worksheet["ungated_accuracy"].values()) < 1.0  # what the gate prevents
    for row in chosen["families"].values():
        assert min(row["accuracy"].values()) >= row["full_program_accuracy"] - 1e-9
    predictor = load_predictor(directory)
    guard = predictor.guard
    assert guard is not None and guard.quantile == report["chosen_quantile"]
    assert guard.fallback is None and report["fallback_strategy"] == "full"
    # the evaluation reports how often the guard fires per group
    asked = [("gen", PHRASES["gen"][0], False), ("odd", "Translate good night to Latin.", True)]
    items = [
        EvalItem(MathProblem(f"{g}-{i}", text.format(n="Ivy", x=i + 2, y=3, f="pears"), "1", 1,
                             "t"), g, ood)
        for g, text, ood in asked
        for i in range(2)
    ]  # fmt: skip
    fires = gate_fires(predictor, items)
    embeddings = embed_questions(predictor.encoder, [item.problem.question for item in items])
    familiar = guard.familiar(embeddings).tolist()
    assert fires["odd"] == fires["ood"] == 1.0 and familiar[2:] == [False, False]
    assert fires["gen"] == fires["in_distribution"] == familiar[:2].count(False) / 2
    # a guard that rejects every question and falls back by length: the long question runs
    # the fallback program, the short one the full program (served as stock vLLM would)
    save_guard(directory, replace(guard, threshold=1.01, fallback=APPLE, fallback_min_words=4))
    served = load_predictor(directory)
    short, long = "7 + 5 = ?", PHRASES["gen"][0].format(n="Ivy", x=7, y=5, f="apples")
    assert predict_programs(served, [short, long]) == [
        [tuple(range(TOY_DEPTH))],
        [parse_program(APPLE, TOY_DEPTH)],
    ]


def test_candidate_set_is_what_every_label_run_shares() -> None:
    from polar_vllm.predictor.candidate_training import candidate_set_of
    from polar_vllm.predictor.errors import PredictorError

    wide = LabelRecord.from_json(_record("gen-L1-s0-00000", "q", {"full"}), "wide")
    narrow_evaluated = tuple((p, r) for p, r in wide.evaluated if p != parse_program(PEAR, 8))
    narrow = LabelRecord("terse-L1-s0-00000", "q2", "1", 1, "toy", 8, True, narrow_evaluated)
    shared = candidate_set_of([wide, narrow])
    assert shared == tuple(p for p, _ in narrow_evaluated)  # in the first record's order
    assert candidate_set_of([wide]) == tuple(p for p, _ in wide.evaluated)
    only_full = LabelRecord("x-L1-s0-00000", "q3", "1", 1, "toy", 8, True, wide.evaluated[:1])
    with pytest.raises(PredictorError, match="share no candidate besides the full program"):
        candidate_set_of([wide, only_full])


def test_family_validation_takes_every_level(tmp_path: Path) -> None:
    """Label files interleave levels (level by level, then family): every third question of
    each family *and level* validates, so no level is held out of training whole."""
    from polar_vllm.predictor.candidate_training import _label_records
    from polar_vllm.predictor.run_settings import load_settings

    lines = []
    for n in range(6):
        for level in (1, 2, 3):
            for family in ("terse", "verbal"):
                record = LabelRecord.from_json(
                    _record(f"{family}-L{level}-s0-{n:05d}", f"q {family} {level} {n}", {"full"}),
                    "toy",
                )
                lines.append(json.dumps(replace(record, level=level).to_json()))
    families = tmp_path / "families.jsonl"
    families.write_text("\n".join(lines) + "\n")
    gen = _labels(tmp_path / "gen.jsonl", ["gen"], set())
    run_file = tmp_path / "run.yaml"
    train = {"head": "candidates", "labels": [str(gen)], "family_labels": [str(families)]}
    run_file.write_text(yaml.safe_dump({"model": "toy", "predictor_dir": "p", "train": train}))
    train_records, val_records = _label_records(load_settings(run_file))
    held = [(family_of(r.id), r.level) for r in val_records if family_of(r.id) != "gen"]
    kept = [(family_of(r.id), r.level) for r in train_records if family_of(r.id) != "gen"]
    pairs = {(f, level) for f in ("terse", "verbal") for level in (1, 2, 3)}
    assert sorted(held) == sorted([*pairs, *pairs]) and set(kept) == pairs and len(kept) == 24
