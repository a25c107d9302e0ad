"""Arithmetic questions in independent *wording families*, beside the story generator.

The story generator (:mod:`polar_vllm.data.generator`) words every question its own way, so a
predictor trained only on it learns its wording as much as its arithmetic. Each family here
asks the same kind of arithmetic in a wording of its own, with templates of its own per level:

- ``terse``: bare expressions (``27 + 26 = ?``, ``-37 + 142``, ``(12 + 7) * 3``), with
  negative and three-digit numbers from level 2 on;
- ``verbal``: operations in words (``What is 14 plus 33?``, ``Add 14 and 33.``);
- ``short_story``: one- or two-sentence word problems;
- ``reordered``: word problems that ask first and give the numbers after;
- ``worksheet``: fill-in-the-blank and solve-for-x forms;
- ``first_person``: word problems told by the asker (``I have 12 pencils ...``).

Levels follow the generator's: 1 is one operation on numbers up to 20, 2 one operation
(including exact division) on larger numbers, 3 two operations. Answers are integers (negative
only where the family writes negative numbers).

A problem's id is ``f"{family}-L{level}-s{seed}-{i:05d}"`` and its source
``f"wording:{family}"``; :func:`family_of` reads the family back from an id (the generator's
ids give ``"gen"``), so label files made from these questions can be split by family.
Generation is reproducible: the same arguments give the same questions everywhere.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from polar_vllm.data.answers import canonical_number
from polar_vllm.data.problems import MathProblem

__all__ = [
    "GENERATOR_FAMILY",
    "WORDING_FAMILIES",
    "family_of",
    "generate_family",
    "generate_wordings",
]

GENERATOR_FAMILY = "gen"
"""The family name :func:`family_of` gives the story generator's ids."""

_NAMES = (
    "Ana", "Bilal", "Chen", "Dara", "Eli", "Farah", "Gus", "Hiro", "Ines", "Jon", "Kofi",
    "Lina", "Marco", "Nadia", "Otto", "Paula", "Quinn", "Rami", "Sara", "Tariq", "Uma", "Vera",
)  # fmt: skip
_THINGS = (
    "coins", "shells", "cards", "pens", "stamps", "cans", "tiles", "keys", "rocks", "socks",
    "cups", "plates", "nails", "bolts", "corks", "leaves", "acorns", "gems",
)  # fmt: skip
_PLACES = ("a jar", "a drawer", "a bin", "a tray", "a sack", "a chest", "a bowl")


class _Redraw(Exception):
    """The drawn numbers do not fit the template (inexact division, zero answer); draw again."""


Template = Callable[[random.Random], tuple[str, int]]


def _exact(a: int, b: int) -> int:
    if b == 0 or a % b:
        raise _Redraw
    return a // b


def _pick(rng: random.Random, options: Sequence[str]) -> str:
    return rng.choice(options)


# --------------------------------------------------------------------------- terse

_TERSE_FORMS = ("{e}", "{e} = ?", "{e} =", "{e}?", "Compute {e}.", "Evaluate: {e}", "{e} equals")
_TIMES = ("*", "*", "x", "×")
_DIVIDE = ("/", "/", "÷")


def _signed(x: int, parenthesize: bool) -> str:
    return f"({x})" if x < 0 and parenthesize else str(x)


def _terse(rng: random.Random, expression: str) -> str:
    return _pick(rng, _TERSE_FORMS).format(e=expression)


def _terse_1(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(2, 20), rng.randint(2, 20)
    op = _pick(rng, ("+", "+", "-", "*"))
    if op == "-":
        a, b = max(a, b), min(a, b)
        return _terse(rng, f"{a} - {b}"), a - b
    if op == "*":
        b = rng.randint(2, 10)
        return _terse(rng, f"{a} {_pick(rng, _TIMES)} {b}"), a * b
    return _terse(rng, f"{a} + {b}"), a + b


def _terse_2(rng: random.Random) -> tuple[str, int]:
    op = _pick(rng, ("+", "-", "*", "/"))
    if op in "+-":
        a, b = rng.randint(-300, 999), rng.randint(10, 999)
        if rng.random() < 0.3:
            b = -b
        value = a + b if op == "+" else a - b
        return _terse(rng, f"{a} {op} {_signed(b, True)}"), value
    if op == "*":
        a, b = rng.randint(-40, 99), rng.randint(2, 25)
        return _terse(rng, f"{_signed(a, rng.random() < 0.5)} {_pick(rng, _TIMES)} {b}"), a * b
    b = rng.randint(2, 25)
    q = rng.randint(-30, 60)
    a = q * b
    return _terse(rng, f"{a} {_pick(rng, _DIVIDE)} {b}"), _exact(a, b)


def _terse_3(rng: random.Random) -> tuple[str, int]:
    a, b, c = rng.randint(-50, 120), rng.randint(2, 60), rng.randint(2, 15)
    form = rng.randrange(5)
    if form == 0:
        return _terse(rng, f"({a} + {b}) * {c}"), (a + b) * c
    if form == 1:
        return _terse(rng, f"{a} * {c} - {b}"), a * c - b
    if form == 2:
        return _terse(rng, f"{a} - {b} + {c * 7}"), a - b + c * 7
    if form == 3:
        total = (a + b) * c
        return _terse(rng, f"({total} / {c}) - {b}"), _exact(total, c) - b
    return _terse(rng, f"{c} * ({a} - {b})"), c * (a - b)


# --------------------------------------------------------------------------- verbal


def _verbal_1(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(2, 20), rng.randint(2, 20)
    hi, lo = max(a, b), min(a, b)
    options = (
        (f"What is {a} plus {b}?", a + b),
        (f"Add {a} and {b}.", a + b),
        (f"What is the sum of {a} and {b}?", a + b),
        (f"Subtract {lo} from {hi}.", hi - lo),
        (f"What is {hi} minus {lo}?", hi - lo),
        (f"How much is {hi} take away {lo}?", hi - lo),
        (f"What is {a} times {min(b, 10)}?", a * min(b, 10)),
        (f"Multiply {a} by {min(b, 10)}.", a * min(b, 10)),
    )
    return rng.choice(options)


def _verbal_2(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(10, 100), rng.randint(2, 100)
    hi, lo = max(a, b), min(a, b)
    d = rng.randint(2, 12)
    n = d * rng.randint(2, 12)
    k = rng.randint(2, 12)
    options = (
        (f"What do you get when you add {b} to {a}?", a + b),
        (f"Find the difference between {hi} and {lo}.", hi - lo),
        (f"What is {lo} less than {hi}?", hi - lo),
        (f"What is the product of {a} and {k}?", a * k),
        (f"Divide {n} by {d}.", n // d),
        (f"What is {n} divided by {d}?", n // d),
        (f"How many times does {d} go into {n}?", n // d),
    )
    return rng.choice(options)


def _verbal_3(rng: random.Random) -> tuple[str, int]:
    a, b, c = rng.randint(2, 40), rng.randint(2, 40), rng.randint(2, 9)
    options = (
        (f"Add {a} and {b}, then multiply the result by {c}.", (a + b) * c),
        (f"What is {a} times {c}, minus {b}?", a * c - b),
        (f"Start with {a + b}, take away {b}, then add {c}. What do you get?", a + c),
        (f"What is {c} times the sum of {a} and {b}?", c * (a + b)),
        (f"Multiply {a} by {c} and then add {b}.", a * c + b),
        (f"Take the sum of {a * c} and {b * c}, and divide it by {c}.", a + b),
    )
    return rng.choice(options)


# --------------------------------------------------------------------------- short stories


def _short_1(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(3, 20), rng.randint(2, 12)
    n, thing, place = _pick(rng, _NAMES), _pick(rng, _THINGS), _pick(rng, _PLACES)
    hi, lo = max(a, b), min(a, b)
    options = (
        (
            f"{place.capitalize()} has {a} {thing}. {b} more are put in. How many {thing} now?",
            a + b,
        ),
        (f"{n} had {hi} {thing} and lost {lo}. How many are left?", hi - lo),
        (f"There are {a} red {thing} and {b} blue {thing}. How many {thing} in all?", a + b),
        (f"{hi} ducks swim in a pond. {lo} fly away. How many ducks still swim?", hi - lo),
        (f"A shelf has {b} rows of {a} {thing}. How many {thing} are on it?", a * b),
    )
    return rng.choice(options)


def _short_2(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(12, 99), rng.randint(2, 12)
    n, thing = _pick(rng, _NAMES), _pick(rng, _THINGS)
    total = a * b
    options = (
        (f"{total} {thing} are split equally among {b} kids. How many does each kid get?", a),
        (f"One ticket costs ${a}. What do {b} tickets cost?", total),
        (f"A farm has {a + b * 5} hens. It sells {b * 5}. How many hens remain?", a),
        (f"{n} reads {a} pages a day for {b} days. How many pages is that?", total),
        (f"A van carries {b} crates of {a} {thing}. How many {thing} in the van?", total),
    )
    return rng.choice(options)


def _short_3(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(3, 12), rng.randint(3, 12)
    c = rng.randint(2, a * b - 1)
    n, thing = _pick(rng, _NAMES), _pick(rng, _THINGS)
    pay = a * b + rng.randint(1, 40)
    options = (
        (f"{n} buys {a} packs of {b} {thing} and gives away {c}. How many are left?", a * b - c),
        (f"Pens cost ${a} each. {n} buys {b} pens and pays ${pay}. What is the change?",
         pay - a * b),
        (f"{a} boxes hold {b} eggs each. {c} eggs break. How many eggs are whole?", a * b - c),
        (f"{n} saves ${a} a week for {b} weeks, then spends ${c}. How much is left?", a * b - c),
        (f"A bag has {c} {thing}. {n} adds {a} bags of {b} {thing}. How many {thing} now?",
         c + a * b),
    )  # fmt: skip
    return rng.choice(options)


# --------------------------------------------------------------------------- reordered


def _reordered_1(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(3, 20), rng.randint(2, 15)
    n, thing = _pick(rng, _NAMES), _pick(rng, _THINGS)
    hi, lo = max(a, b), min(a, b)
    options = (
        (f"How many {thing} does {n} have after finding {b} more, if {n} started with {a}?",
         a + b),
        (f"How many birds are left on the roof, if {hi} were there and {lo} flew away?", hi - lo),
        (f"What is the total number of {thing}, when one bin holds {a} and another {b}?", a + b),
        (f"How many {thing} are in {min(b, 9)} equal piles, with {a} in each pile?",
         a * min(b, 9)),
    )  # fmt: skip
    return rng.choice(options)


def _reordered_2(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(11, 90), rng.randint(2, 12)
    n, thing = _pick(rng, _NAMES), _pick(rng, _THINGS)
    options = (
        (f"How many slices does each friend get, if {a * b} slices are shared by {b} friends?",
         a),
        (f"What do {b} notebooks cost, when each one costs ${a}?", a * b),
        (f"How many seats stay empty in a hall of {a + b * 7} seats, once {b * 7} people sit?",
         a),
        (f"How many {thing} did {n} collect in all, collecting {a} a day for {b} days?", a * b),
    )  # fmt: skip
    return rng.choice(options)


def _reordered_3(rng: random.Random) -> tuple[str, int]:
    a, b, c = rng.randint(2, 12), rng.randint(3, 15), rng.randint(2, 9)
    n, thing = _pick(rng, _NAMES), _pick(rng, _THINGS)
    money = a * b + rng.randint(1, 50)
    options = (
        (f"How much money is left for {n}, who had ${money} and bought {a} books at ${b} each?",
         money - a * b),
        (f"How many {thing} does each of {c} kids get, when {a * c} sheets of {b} {thing} are "
         f"shared equally?", a * b),
        (f"How many apples remained, after {n} picked {b} a day for {a} days and ate {c}?",
         a * b - c),
        (f"What is the cost of {a} lunches at ${b} and {c} drinks at $2?", a * b + 2 * c),
    )  # fmt: skip
    return rng.choice(options)


# --------------------------------------------------------------------------- worksheet


def _worksheet_1(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(2, 20), rng.randint(2, 20)
    options = (
        (f"Fill in the blank: {a} + {b} = __", a + b),
        (f"x = {a + b} - {b}. What is x?", a),
        (f"Solve for x: x - {b} = {a}.", a + b),
        (f"{b} + x = {a + b}. Find x.", a),
        (f"What number is {b} more than {a}?", a + b),
    )
    return rng.choice(options)


def _worksheet_2(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(5, 60), rng.randint(2, 12)
    options = (
        (f"Solve for n: n / {b} = {a}.", a * b),
        (f"{b} × n = {a * b}. n = ?", a),
        (f"Find the missing number: {a + b * 3} - __ = {a}", b * 3),
        (f"What number is {b} less than {a}?", a - b),
        (f"Fill in the blank: {a * b} ÷ {b} = __", a),
    )
    return rng.choice(options)


def _worksheet_3(rng: random.Random) -> tuple[str, int]:
    a, b, x = rng.randint(2, 9), rng.randint(1, 30), rng.randint(2, 15)
    c = rng.randint(2, 9)
    options = (
        (f"Solve for x: {a}x + {b} = {a * x + b}.", x),
        (f"Find y if y = ({x} + {b}) × {c}.", (x + b) * c),
        (f"If x = {x} and y = {c}, what is x * y - {b}?", x * c - b),
        (f"Fill in the blank: ({x} × {a}) + {b} = __", x * a + b),
    )
    return rng.choice(options)


# --------------------------------------------------------------------------- first person


def _first_person_1(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(3, 20), rng.randint(2, 12)
    thing = _pick(rng, _THINGS)
    hi, lo = max(a, b), min(a, b)
    options = (
        (f"I have {a} {thing} and my friend gives me {b} more. How many {thing} do I have?",
         a + b),
        (f"My brother is {hi} and I am {lo} years younger. How old am I?", hi - lo),
        (f"You have {hi} balloons and {lo} of them pop. How many do you still have?", hi - lo),
        (f"We set {min(b, 9)} tables with {a} plates each. How many plates did we use?",
         a * min(b, 9)),
    )  # fmt: skip
    return rng.choice(options)


def _first_person_2(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(11, 90), rng.randint(2, 12)
    options = (
        (f"I bake {a * b} muffins and pack them in bags of {b}. How many bags do I fill?", a),
        (f"We drove {a} km each day for {b} days. How far did we drive?", a * b),
        (f"I paid ${a * b} for {b} identical shirts. How much did one shirt cost?", a),
        (f"You had ${a + b * 4} and spent ${b * 4}. How much do you have now?", a),
    )
    return rng.choice(options)


def _first_person_3(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(2, 12), rng.randint(3, 15)
    c = rng.randint(2, a * b - 1)
    options = (
        (f"I buy {a} packs of {b} cards and give {c} cards to my sister. How many do I keep?",
         a * b - c),
        (f"You earn ${b} an hour and work {a} hours, then spend ${c}. How much is left?",
         a * b - c),
        (f"My class has {a} groups of {b} kids and {c} teachers. How many people is that?",
         a * b + c),
    )  # fmt: skip
    return rng.choice(options)


_FAMILY_TEMPLATES: dict[str, dict[int, Template]] = {
    "terse": {1: _terse_1, 2: _terse_2, 3: _terse_3},
    "verbal": {1: _verbal_1, 2: _verbal_2, 3: _verbal_3},
    "short_story": {1: _short_1, 2: _short_2, 3: _short_3},
    "reordered": {1: _reordered_1, 2: _reordered_2, 3: _reordered_3},
    "worksheet": {1: _worksheet_1, 2: _worksheet_2, 3: _worksheet_3},
    "first_person": {1: _first_person_1, 2: _first_person_2, 3: _first_person_3},
}

WORDING_FAMILIES: tuple[str, ...] = tuple(_FAMILY_TEMPLATES)
"""The wording families, in the order :func:`generate_wordings` interleaves them."""

_MAX_DRAWS_PER_PROBLEM = 200


def family_of(question_id: str) -> str:
    """The wording family a question id names: the part before ``-L<level>``.

    The story generator's ids (``gen-L1-s0-00012``) give :data:`GENERATOR_FAMILY`; an id
    without a level part is its own family.
    """
    head, sep, _ = question_id.partition("-L")
    return head if sep else question_id


def generate_family(family: str, level: int, count: int, seed: int) -> list[MathProblem]:
    """``count`` distinct questions of ``family`` at ``level`` (1..3), reproducibly.

    Raises ``ValueError`` for an unknown family or level or a negative count, and
    ``RuntimeError`` if ``count`` distinct questions cannot be drawn.
    """
    if family not in _FAMILY_TEMPLATES:
        raise ValueError(f"wording family must be one of {WORDING_FAMILIES}, got {family!r}")
    templates = _FAMILY_TEMPLATES[family]
    if level not in templates:
        raise ValueError(f"wording levels are {tuple(templates)}, got {level!r}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    rng = random.Random(f"polar-vllm-wording:{family}:{level}:{seed}")
    seen: set[str] = set()
    out: list[MathProblem] = []
    for _ in range(_MAX_DRAWS_PER_PROBLEM * (count + 10)):
        if len(out) == count:
            return out
        try:
            question, answer = templates[level](rng)
        except _Redraw:
            continue
        if question in seen or answer == 0:
            continue
        seen.add(question)
        out.append(
            MathProblem(
                id=f"{family}-L{level}-s{seed}-{len(out):05d}",
                question=question,
                answer=canonical_number(answer),
                level=level,
                source=f"wording:{family}",
            )
        )
    if len(out) == count:
        return out
    raise RuntimeError(f"could not draw {count} distinct {family} level-{level} questions")


def generate_wordings(
    families: Sequence[str], levels: Sequence[int], count_per_level: int, seed: int
) -> list[MathProblem]:
    """Questions of every family and level, interleaved: level by level in turn, and within
    each level one family after the other, so that the first questions of the list cover every
    family and level alike (a label run stopped early stays balanced)."""
    tables = [
        [generate_family(family, level, count_per_level, seed) for family in families]
        for level in levels
    ]
    return [
        problems[i]
        for i in range(count_per_level)
        for level_table in tables
        for problems in level_table
    ]
