"""Tests for polar_vllm.data: generator, splits, answer extraction/matching, JSONL, prompts."""

from __future__ import annotations

import ast
import gzip
import itertools
import json
import re
import statistics
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import polar_vllm.data as data_pkg
from polar_vllm.data import (
    DEFAULT_SPLIT,
    LEVELS,
    SYSTEM_PROMPT,
    MathProblem,
    Ref,
    Step,
    answers_match,
    build_messages,
    build_prompt,
    canonical_number,
    evaluate_steps,
    extract_answer,
    generate_dataset,
    generate_problems,
    generate_worked_problems,
    load_jsonl,
    normalize_number,
    save_jsonl,
    split_problems,
)

SETTINGS = settings(derandomize=True, deadline=None, max_examples=200)
N = 400  # problems per level in most generator tests
INT_RE = re.compile(r"\d+")


# --------------------------------------------------------------------------- helpers


def independent_eval(steps: tuple[Step, ...]) -> int:
    """Evaluate a solution with plain Python operators, checking every intermediate value."""
    values: list[int] = []
    for i, s in enumerate(steps):
        xs = []
        for x in (s.a, s.b):
            if isinstance(x, Ref):
                assert 0 <= x.index < i
                xs.append(values[x.index])
            else:
                assert isinstance(x, int) and x >= 0
                xs.append(x)
        a, b = xs
        if s.op == "+":
            v = a + b
        elif s.op == "-":
            v = a - b
        elif s.op == "*":
            v = a * b
        elif s.op == "/":
            assert b != 0 and a % b == 0, "inexact division"
            v = a // b
        elif s.op == "%":
            assert b != 0
            v = a % b
        else:
            raise AssertionError(f"unknown op {s.op}")
        assert v >= 0, "negative intermediate value"
        values.append(v)
    return values[-1]


def literals(steps: tuple[Step, ...]) -> list[int]:
    return [x for s in steps for x in (s.a, s.b) if not isinstance(x, Ref)]


@pytest.fixture(scope="module")
def worked() -> dict[int, list]:
    return {level: generate_worked_problems(level, N, seed=0) for level in LEVELS}


# --------------------------------------------------------------------------- generator


@pytest.mark.parametrize("level", LEVELS)
def test_generator_is_deterministic(level):
    a = generate_problems(level, 60, seed=11)
    b = generate_problems(level, 60, seed=11)
    assert a == b
    assert [p.id for p in a] == [f"gen-L{level}-s11-{i:05d}" for i in range(60)]
    assert all(p.level == level and p.source == "generated" for p in a)


@pytest.mark.parametrize("level", LEVELS)
def test_different_seeds_give_different_questions(level):
    a = {p.question for p in generate_problems(level, 100, seed=0)}
    b = {p.question for p in generate_problems(level, 100, seed=1)}
    assert len(a & b) < 10


def test_prefix_stability_and_levels_differ():
    # A longer request extends a shorter one with the same seed.
    assert generate_problems(3, 120, seed=5)[:50] == generate_problems(3, 50, seed=5)
    questions = [{p.question for p in generate_problems(lv, 200, seed=0)} for lv in LEVELS]
    for i in range(len(LEVELS)):
        for j in range(i + 1, len(LEVELS)):
            assert not questions[i] & questions[j]


@pytest.mark.parametrize("level", LEVELS)
def test_answers_are_correct_and_use_numbers_from_the_question(worked, level):
    for w in worked[level]:
        p = w.problem
        answer = independent_eval(w.steps)
        assert p.answer == str(answer)
        assert answer > 0
        assert evaluate_steps(w.steps) == answer
        shown = set(INT_RE.findall(p.question))
        for x in literals(w.steps):
            assert str(x) in shown, (x, p.question)
        # every intermediate result is used later (the last one is the answer)
        used = {x.index for s in w.steps for x in (s.a, s.b) if isinstance(x, Ref)}
        assert used == set(range(len(w.steps) - 1)), p.question
        assert extract_answer(p.answer) == p.answer
        assert p.question.endswith("?")


# Independent solvers that read the numbers from the question text only.
TEXT_SOLVERS = {
    "l1_buy_more": (r"has (\d+) .* and [a-z ]+ (\d+) more\.", lambda a, b: a + b),
    "l1_groups": (r"has (\d+) \w+ with (\d+) ", lambda a, b: a * b),
    "l1_birds": (r"There are (\d+) .*\. (\d+) of them ", lambda a, b: a - b),
    "l2_share": (r"has (\d+) .* among (\d+) ", lambda a, b: a // b),
    "l2_price": (
        r"costs \$(\d+)\. How many dollars do (\d+) |buys (\d+) [\w -]+ for \$(\d+) each",
        lambda p, k: p * k,
    ),
    "l3_change": (
        r"buys (\d+) .* cost \$(\d+) each and pays with a \$(\d+) bill",
        lambda k, p, bill: bill - k * p,
    ),
    "l3_times_as_many": (r"has (\d+) .* has (\d+) times as many", lambda a, k: a + a * k),
    "l4_drive": (
        r"at (\d+) kilometers per hour for (\d+) hours, then at (\d+) kilometers per hour "
        r"for (\d+) hours",
        lambda a, b, c, d: a * b + c * d,
    ),
    "l4_tank": (
        r"holds (\d+) \w+ of water\. Water flows in at (\d+) \w+ per minute for (\d+) minutes, "
        r"and then (\d+)",
        lambda x, r, t, d: x + r * t - d,
    ),
    "l5_trip_left": (
        r"plans a (\d+)-kilometer trip .* at (\d+) kilometers per hour for (\d+) hours, "
        r"then at (\d+) kilometers per hour for (\d+) hours",
        lambda total, a, b, c, d: total - (a * b + c * d),
    ),
    "l5_leftover": (
        r"collects (\d+) .* for (\d+) days, gets (\d+) more as a gift, and gives (\d+) to "
        r".* among (\d+) friends",
        lambda a, d, g, x, f: (a * d + g - x) % f,
    ),
    "l5_two_pumps": (
        r"holds (\d+) \w+ .* adds (\d+) \w+ per minute .* adds (\d+) \w+ per minute"
        r".* for (\d+) minutes\. Then (\d+) ",
        lambda a, ra, rb, t, d: a + (ra + rb) * t - d,
    ),
}


def test_answers_match_text_only_solvers(worked):
    seen = set()
    for level in LEVELS:
        for w in worked[level]:
            if w.template not in TEXT_SOLVERS:
                continue
            pattern, solve = TEXT_SOLVERS[w.template]
            m = re.search(pattern, w.problem.question)
            assert m, (w.template, w.problem.question)
            args = [int(g) for g in m.groups() if g is not None]
            assert str(solve(*args)) == w.problem.answer, w.problem.question
            seen.add(w.template)
    assert seen == set(TEXT_SOLVERS)


def test_levels_get_harder(worked):
    mean_steps = [statistics.mean(len(w.steps) for w in worked[lv]) for lv in LEVELS]
    assert mean_steps[0] == mean_steps[1] == 1
    assert mean_steps[1] < mean_steps[2] < mean_steps[3] < mean_steps[4]
    assert mean_steps[4] >= 4
    assert all(len(w.steps) >= 4 for w in worked[5])
    mean_max = [statistics.mean(max(literals(w.steps)) for w in worked[lv]) for lv in LEVELS]
    assert all(x < y for x, y in itertools.pairwise(mean_max)), mean_max
    assert all(max(literals(w.steps)) <= 20 for w in worked[1])
    assert all(max(literals(w.steps)) <= 100 for w in worked[2])
    mean_answer = [statistics.mean(int(w.problem.answer) for w in worked[lv]) for lv in LEVELS]
    assert mean_answer[0] < mean_answer[2] < mean_answer[4]


@pytest.mark.parametrize("level", LEVELS)
def test_questions_are_diverse(worked, level):
    ws = worked[level]
    assert len({w.template for w in ws}) >= 8
    skeletons = {INT_RE.sub("#", w.problem.question) for w in ws}
    assert len(skeletons) > 0.6 * len(ws)
    first_words = {w.problem.question.split()[0] for w in ws}
    assert len(first_words) >= 5


def test_no_duplicates_at_full_split_size():
    problems = generate_dataset(count_per_level=sum(DEFAULT_SPLIT), seed=3)
    assert len(problems) == len(LEVELS) * sum(DEFAULT_SPLIT)
    assert len({p.question for p in problems}) == len(problems)
    assert len({p.id for p in problems}) == len(problems)
    assert [p.level for p in problems[:: sum(DEFAULT_SPLIT)]] == list(LEVELS)


def test_generator_argument_errors():
    assert generate_problems(1, 0, seed=0) == []
    with pytest.raises(ValueError, match="level"):
        generate_problems(6, 5, seed=0)
    with pytest.raises(ValueError, match="count"):
        generate_problems(1, -1, seed=0)
    assert [p.level for p in generate_dataset([2, 4], 3, seed=0)] == [2, 2, 2, 4, 4, 4]


def test_evaluate_steps_rejects_bad_solutions():
    assert evaluate_steps((Step("*", 3, 4), Step("-", 20, Ref(0)))) == 8
    assert evaluate_steps((Step("%", 17, 5),)) == 2
    with pytest.raises(ValueError):
        evaluate_steps(())
    with pytest.raises(ValueError):
        evaluate_steps((Step("-", 3, 4),))
    with pytest.raises(ValueError):
        evaluate_steps((Step("/", 7, 2),))
    with pytest.raises(ValueError):
        evaluate_steps((Step("+", 1, Ref(0)),))


# --------------------------------------------------------------------------- splits


def test_default_split_sizes_and_disjointness():
    problems = generate_dataset(seed=0)
    splits = split_problems(problems, seed=0)
    train, val, test = splits
    for level in LEVELS:
        assert sum(p.level == level for p in train) == 1250
        assert sum(p.level == level for p in val) == 250
        assert sum(p.level == level for p in test) == 500
    ids = [{p.id for p in part} for part in splits]
    assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    assert sum(map(len, ids)) == len(problems)
    qs = [{p.question for p in part} for part in splits]
    assert not qs[0] & qs[2] and not qs[1] & qs[2]
    # keeps input order within a split
    pos = {p.id: i for i, p in enumerate(problems)}
    assert [pos[p.id] for p in test] == sorted(pos[p.id] for p in test)


def test_split_is_seeded():
    problems = generate_problems(2, 100, seed=0) + generate_problems(4, 100, seed=0)
    a = split_problems(problems, 60, 10, 20, seed=1)
    assert a == split_problems(problems, 60, 10, 20, seed=1)
    assert a.test != split_problems(problems, 60, 10, 20, seed=2).test
    assert (len(a.train), len(a.val), len(a.test)) == (120, 20, 40)


def test_split_errors_and_unlevelled_group():
    problems = generate_problems(1, 30, seed=0)
    with pytest.raises(ValueError, match="fewer than"):
        split_problems(problems, 20, 5, 10)
    with pytest.raises(ValueError, match="unique"):
        split_problems(problems + problems[:1], 10, 5, 5)
    with pytest.raises(ValueError):
        split_problems(problems, -1, 5, 5)
    loose = [MathProblem(f"x{i}", f"q{i}", "1", None, "t") for i in range(10)]
    s = split_problems(loose, 5, 2, 3)
    assert sorted(p.id for part in s for p in part) == sorted(p.id for p in loose)


# --------------------------------------------------------------------------- answers

EXTRACT_CASES = [
    ("#### 72", "72"),
    ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nSo 48+24 = <<48+24=72>>72\n#### 72", "72"),
    ("Total: 5 + 3 = 8.\n#### 1,234", "1234"),
    (r"The probability is \boxed{3/4}.", "0.75"),
    (r"So we get $\boxed{\frac{3}{4}}$.", "0.75"),
    (r"First 2 + 2 = 4, then \boxed{1} and finally \boxed{-\dfrac{1}{3}}", "-1/3"),
    (r"\boxed{72 \text{ apples}}", "72"),
    (r"\boxed{1{,}000}", "1000"),
    (r"The answer is \boxed{x + 1}", None),
    ("The answer is 1,234.", "1234"),
    ("The answer is: 72", "72"),
    ("Step 1: 3 * 4 = 12. The final answer is $5.00.", "5"),
    ("**Answer:** 42", "42"),
    ("$5.00", "5"),
    ("72 apples", "72"),
    ("-3", "-3"),
    ("It is −7 degrees.", "-7"),
    ("0.50", "0.5"),
    (".5", "0.5"),
    ("3/4", "0.75"),
    ("2/3", "2/3"),
    ("50%", "50"),
    (r"25\%", "25"),
    ("18.", "18"),
    ("3 * 4 = 12 apples", "12"),
    ("x = -5", "-5"),
    ("12\n\nQuestion: Tom has 5 apples and buys 3 more = 8", "12"),
    ("\n  \n14 marbles\nbecause 7 * 2", "14"),
    ("5 or 6", "5"),
    ("10-5", "10"),
    ("Answer: -$5", "-5"),
    ("I am not sure.", None),
    ("", None),
    (None, None),
    ("3/0", None),
]


@pytest.mark.parametrize(("text", "expected"), EXTRACT_CASES)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


MATCHING = [
    ("1,000", "1000"),
    ("2.50", "2.5"),
    ("0.5", "1/2"),
    ("5", "5.0"),
    ("$5", "5"),
    ("$5.00", "5"),
    ("-$5", "-5"),
    (" 42. ", "42"),
    ("25%", "25"),
    (r"\boxed{5}", "5"),
    (r"$\frac{1}{2}$", "0.5"),
    ("-0.25", "-1/4"),
    ("007", "7"),
    ("1,234,567", "1234567.0"),
]
NOT_MATCHING = [
    (None, "5"),
    ("12", "1.2"),
    ("5", "6"),
    ("-3", "3"),
    ("5 or 6", "5"),
    ("72 apples", "72"),
    ("12,34", "1234"),
    ("1/3", "0.33"),
    ("0.333", "1/3"),
    ("", "0"),
    ("five", "5"),
    ("5", "five"),
    ("1/0", "0"),
    (r"\boxed{5} and \boxed{6}", "6"),
]


@pytest.mark.parametrize(("a", "b"), MATCHING)
def test_answers_match_accepts_equivalent_forms(a, b):
    assert answers_match(a, b)
    assert answers_match(b, a)


@pytest.mark.parametrize(("a", "b"), NOT_MATCHING)
def test_answers_match_rejects(a, b):
    assert not answers_match(a, b)


def test_normalize_and_canonical():
    assert normalize_number("1,234.50") == Fraction(246_9, 2)
    assert normalize_number(2.5) == Fraction(5, 2)
    assert normalize_number(0.1) == Fraction(1, 10)
    assert normalize_number(7) == 7
    assert normalize_number(True) is None
    assert normalize_number(float("nan")) is None
    assert normalize_number("1 2") is None
    assert normalize_number("$-5") == -5
    assert canonical_number(Fraction(5, 2)) == "2.5"
    assert canonical_number(Fraction(-1, 8)) == "-0.125"
    assert canonical_number(Fraction(1, 3)) == "1/3"
    assert canonical_number(Fraction(-7, 6)) == "-7/6"
    assert canonical_number(Fraction(1, 20)) == "0.05"
    assert canonical_number(40) == "40"


@SETTINGS
@given(
    st.fractions(max_denominator=2000).filter(lambda f: abs(f) < 10**9),
)
def test_canonical_number_round_trips(value):
    text = canonical_number(value)
    assert normalize_number(text) == value
    assert extract_answer(f"The answer is {text}.") == text
    assert extract_answer(text) == text
    assert answers_match(text, text)


@SETTINGS
@given(st.integers(0, 10**12), st.integers(1, 10**6))
def test_integer_forms_match(n, other):
    grouped = f"{n:,}"
    assert answers_match(grouped, str(n))
    assert answers_match(f"${n}.00", str(n))
    assert extract_answer(f"So the total is {grouped} dollars.") == str(n)
    assert answers_match(str(n), str(n + other)) is False


# --------------------------------------------------------------------------- JSONL


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_gsm8k_style(tmp_path):
    path = write_lines(
        tmp_path / "gsm8k_test.jsonl",
        [
            json.dumps({"question": "Q1?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"}),
            "",
            json.dumps({"question": "Q2?", "answer": "He has 1,000 - 1 = 999\n#### 999"}),
            json.dumps({"question": "Q3?", "answer": "Loss of 5.\n#### -5"}),
        ],
    )
    problems = load_jsonl(path)
    assert [p.answer for p in problems] == ["7", "999", "-5"]
    assert [p.id for p in problems] == ["gsm8k_test-00000", "gsm8k_test-00001", "gsm8k_test-00002"]
    assert all(p.source == "gsm8k_test" and p.level is None for p in problems)
    assert [p.question for p in problems] == ["Q1?", "Q2?", "Q3?"]
    limited = load_jsonl(path, level=2, source="gsm8k", limit=2)
    assert [(p.id, p.level, p.source) for p in limited] == [
        ("gsm8k-00000", 2, "gsm8k"),
        ("gsm8k-00001", 2, "gsm8k"),
    ]
    assert load_jsonl(path, limit=0) == []


def test_load_dart_math_and_other_styles(tmp_path):
    path = write_lines(
        tmp_path / "mixed.jsonl",
        [
            json.dumps({"query": "Dq?", "response": r"We compute... so $\boxed{\frac{3}{4}}$."}),
            json.dumps({"query": "Dq2?", "response": "Thus 6 * 7 = 42.\nThe answer is: 42"}),
            json.dumps({"problem": "Mq?", "solution": r"\boxed{12}", "level": "Level 3"}),
            json.dumps({"question": "Aq?", "answer": 2.5, "id": "asdiv-7", "level": 1}),
            json.dumps({"question": "Aq2?", "answer": "72 (apples)", "source": "asdiv"}),
            json.dumps({"question": "Pq?", "answer": None, "solution": "so #### 8"}),
        ],
    )
    problems = load_jsonl(path)
    assert [p.answer for p in problems] == ["0.75", "42", "12", "2.5", "72", "8"]
    assert problems[2].level == 3
    assert problems[3].id == "asdiv-7" and problems[3].level == 1
    assert problems[4].source == "asdiv" and problems[0].source == "mixed"


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"question": "Q?", "answer": "1"', "invalid JSON"),
        ('["Q?", "1"]', "JSON object"),
        ('{"answer": "1"}', "missing question"),
        ('{"question": "Q?"}', "missing answer"),
        ('{"question": "", "answer": "1"}', "non-empty"),
        ('{"question": "Q?", "answer": "x + y"}', "no numeric"),
    ],
)
def test_load_errors_name_file_and_line(tmp_path, bad_line, message):
    good = json.dumps({"question": "Q?", "answer": "#### 1"})
    path = write_lines(tmp_path / "bad.jsonl", [good, "", bad_line, good])
    with pytest.raises(ValueError, match=message) as info:
        load_jsonl(path)
    assert f"{path}:3:" in str(info.value)


def test_load_skip_non_numeric(tmp_path):
    path = write_lines(
        tmp_path / "m.jsonl",
        [
            json.dumps({"problem": "Q1?", "solution": r"\boxed{x^2}"}),
            json.dumps({"problem": "Q2?", "solution": r"\boxed{4}"}),
        ],
    )
    problems = load_jsonl(path, skip_non_numeric=True)
    assert [(p.question, p.answer, p.id) for p in problems] == [("Q2?", "4", "m-00000")]


@pytest.mark.parametrize("name", ["round.jsonl", "sub/dir/round.jsonl.gz"])
def test_save_load_round_trip(tmp_path, name):
    problems = generate_dataset([1, 5], 20, seed=4)
    problems.append(MathProblem("ext-1", "Ünïcode “quotes”?\nLine 2", "1/3", None, "ext"))
    problems.append(MathProblem("ext-2", "Half?", "-2.5", 7, "ext"))
    path = tmp_path / name
    assert save_jsonl(problems, path) == len(problems)
    assert load_jsonl(path) == problems
    if name.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            assert json.loads(f.readline())["id"] == problems[0].id


# --------------------------------------------------------------------------- prompts


class FakeTokenizer:
    """Records apply_chat_template calls and renders a simple template."""

    def __init__(self):
        self.calls = []

    def apply_chat_template(self, messages, tokenize=True, add_generation_prompt=False):
        self.calls.append((messages, tokenize, add_generation_prompt))
        text = "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages)
        return text + ("<|assistant|>" if add_generation_prompt else "")


def test_build_messages():
    messages = build_messages("  How many?  ")
    assert messages == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "How many?"},
    ]
    merged = build_messages("How many?", merge_system=True)
    assert [m["role"] for m in merged] == ["user"]
    assert merged[0]["content"].startswith(SYSTEM_PROMPT) and merged[0]["content"].endswith(
        "How many?"
    )
    assert build_messages("Q?", system_prompt="") == [{"role": "user", "content": "Q?"}]
    assert "only" in SYSTEM_PROMPT and "number" in SYSTEM_PROMPT


def test_build_prompt_with_fake_tokenizer():
    tok = FakeTokenizer()
    prompt = build_prompt("Tom has 3 apples. How many?", tok)
    assert tok.calls == [(build_messages("Tom has 3 apples. How many?"), False, True)]
    assert prompt.startswith(f"<|system|>{SYSTEM_PROMPT}<|end|>")
    assert prompt.endswith("<|user|>Tom has 3 apples. How many?<|end|><|assistant|>")

    class BadTokenizer:
        def apply_chat_template(self, messages, tokenize=True, add_generation_prompt=False):
            return [1, 2, 3]

    with pytest.raises(TypeError):
        build_prompt("Q?", BadTokenizer())


def test_build_prompt_plain():
    prompt = build_prompt("Tom has 3 apples. How many?")
    assert prompt == f"{SYSTEM_PROMPT}\n\nQuestion: Tom has 3 apples. How many?\nAnswer:"
    assert build_prompt("Q?", system_prompt="") == "Question: Q?\nAnswer:"


# --------------------------------------------------------------------------- package


def test_modules_import_only_the_standard_library():
    package_dir = Path(data_pkg.__file__).parent
    files = sorted(package_dir.glob("*.py"))
    assert {f.stem for f in files} >= {"problems", "generator", "prompts", "answers", "jsonl"}
    for file in files:
        tree = ast.parse(file.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            for root in roots:
                assert root == "polar_vllm" or root in sys.stdlib_module_names, (file, root)
    assert set(data_pkg.__all__) <= set(dir(data_pkg))
