"""Wording families: reproducible, distinct, interleaved questions whose answers an independent
solver agrees with, and the search config and evaluation items built from them."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest

from polar_vllm.data import generate_problems
from polar_vllm.data.wordings import (
    GENERATOR_FAMILY,
    WORDING_FAMILIES,
    family_of,
    generate_family,
    generate_wordings,
)
from polar_vllm.predictor.eval_run import build_items
from polar_vllm.predictor.run_settings import EvalSettings
from polar_vllm.search.config import SearchConfig
from polar_vllm.search.pipeline import load_questions

LEVELS = (1, 2, 3)


@pytest.mark.parametrize("family", WORDING_FAMILIES)
def test_families_are_reproducible_distinct_and_named(family: str) -> None:
    for level in LEVELS:
        problems = generate_family(family, level, 60, seed=0)
        assert problems == generate_family(family, level, 60, seed=0)
        assert len({p.question for p in problems}) == 60
        assert {family_of(p.id) for p in problems} == {family}
        assert {p.level for p in problems} == {level}
        assert all(p.source == f"wording:{family}" for p in problems)
        assert all(Fraction(p.answer).denominator == 1 and p.answer != "0" for p in problems)
        other = generate_family(family, level, 60, seed=1)
        assert len({p.question for p in other} - {p.question for p in problems}) >= 30


def _solve_terse(question: str) -> Fraction:
    """The value of a terse question's expression, by Python's own arithmetic."""
    expression = re.sub(r"^(Compute|Evaluate:)\s*|\s*(= \?|=|\?|equals|\.)$", "", question)
    expression = expression.replace("×", "*").replace(" x ", " * ").replace("÷", "/")
    assert re.fullmatch(r"[-+*/() \d]+", expression), question
    return Fraction(eval(expression.replace("/", "//")))  # exact divisions only


_VERBAL = (
    (r"What is (\d+) plus (\d+)\?", lambda a, b: a + b),
    (r"Add (\d+) and (\d+)\.", lambda a, b: a + b),
    (r"What is the sum of (\d+) and (\d+)\?", lambda a, b: a + b),
    (r"Subtract (\d+) from (\d+)\.", lambda b, a: a - b),
    (r"What is (\d+) minus (\d+)\?", lambda a, b: a - b),
    (r"How much is (\d+) take away (\d+)\?", lambda a, b: a - b),
    (r"What is (\d+) times (\d+)\?", lambda a, b: a * b),
    (r"Multiply (\d+) by (\d+)\.", lambda a, b: a * b),
    (r"What do you get when you add (\d+) to (\d+)\?", lambda b, a: a + b),
    (r"Find the difference between (\d+) and (\d+)\.", lambda a, b: a - b),
    (r"What is (\d+) less than (\d+)\?", lambda b, a: a - b),
    (r"What is the product of (\d+) and (\d+)\?", lambda a, b: a * b),
    (r"Divide (\d+) by (\d+)\.", lambda a, b: Fraction(a, b)),
    (r"What is (\d+) divided by (\d+)\?", lambda a, b: Fraction(a, b)),
    (r"How many times does (\d+) go into (\d+)\?", lambda b, a: Fraction(a, b)),
)


def _solve_verbal(question: str) -> Fraction | None:
    for pattern, solve in _VERBAL:
        match = re.fullmatch(pattern, question)
        if match:
            return Fraction(solve(*map(int, match.groups())))
    return None


def test_answers_agree_with_independent_solvers() -> None:
    for level in LEVELS:
        for problem in generate_family("terse", level, 200, seed=0):
            assert _solve_terse(problem.question) == Fraction(problem.answer), problem
    solved = 0
    for level in (1, 2):
        for problem in generate_family("verbal", level, 200, seed=0):
            value = _solve_verbal(problem.question)
            assert value is not None, problem.question
            assert value == Fraction(problem.answer), problem
            solved += 1
    assert solved == 400


def test_terse_family_writes_negative_and_large_numbers() -> None:
    questions = [p.question for p in generate_family("terse", 2, 200, seed=0)]
    assert any(re.search(r"(^|[ (])-\d", q) for q in questions)
    assert any(re.search(r"\d{3}", q) for q in questions)
    assert any(p.answer.startswith("-") for p in generate_family("terse", 2, 200, seed=0))


def test_interleaving_family_of_and_errors() -> None:
    problems = generate_wordings(["terse", "verbal"], LEVELS, 2, seed=0)
    assert [(family_of(p.id), p.level) for p in problems[:6]] == [
        ("terse", 1), ("verbal", 1), ("terse", 2), ("verbal", 2), ("terse", 3), ("verbal", 3)
    ]  # fmt: skip
    assert len(problems) == 12
    assert family_of(generate_problems(1, 1, 0)[0].id) == GENERATOR_FAMILY
    assert family_of("my-question") == "my-question"
    with pytest.raises(ValueError, match="wording family must be one of"):
        generate_family("haiku", 1, 1, 0)
    with pytest.raises(ValueError, match="wording levels"):
        generate_family("terse", 4, 1, 0)
    with pytest.raises(ValueError, match="count"):
        generate_family("terse", 1, -1, 0)


def test_search_config_takes_questions_from_families(tmp_path) -> None:
    config = SearchConfig(
        model="smollm2-135m",
        families=("verbal", "worksheet"),
        levels=(1, 3),
        questions_per_level=3,
        output_dir=str(tmp_path),
    )
    questions = load_questions(config)
    assert questions == generate_wordings(["verbal", "worksheet"], [1, 3], 3, seed=0)
    with pytest.raises(ValueError, match="unknown wording families"):
        SearchConfig(model="smollm2-135m", families=("haiku",))
    with pytest.raises(ValueError, match="keep one"):
        SearchConfig(model="smollm2-135m", families=("terse",), data_file="x.jsonl")
    with pytest.raises(ValueError, match="split applies"):
        SearchConfig(model="smollm2-135m", families=("terse",), split=(5, 5, 5))


def test_evaluation_items_of_families_skip_labelled_questions(tmp_path) -> None:
    from polar_vllm.search.labels import LabelRecord, write_label_records

    seen = generate_family("terse", 1, 3, seed=1)  # pretend these were labelled
    labels = tmp_path / "labels.jsonl"
    write_label_records(
        [LabelRecord(p.id, p.question, p.answer, 1, "m", 4, True, ()) for p in seen], labels
    )
    settings = EvalSettings(
        levels=(1, 2),
        ood_levels=(),
        count_per_level=0,
        families=("terse",),
        ood_families=("first_person",),
        family_count_per_level=4,
        exclude_labels=(str(labels),),
    )
    items, _ = build_items(settings)
    groups = [item.group for item in items]
    assert groups.count("family terse") == 8 and groups.count("ood family first_person") == 8
    terse = [item.problem for item in items if item.group == "family terse"]
    assert not {p.question for p in terse} & {p.question for p in seen}
    assert all(item.ood == item.group.startswith("ood") for item in items)
