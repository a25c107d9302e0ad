"""Seeded generator of arithmetic word problems in five difficulty levels, with exact answers.

Every problem is built from a template together with its *solution*: a tuple of :class:`Step`
records (``op`` applied to two operands, each a literal integer printed in the question or a
:class:`Ref` to an earlier step's result). The answer is the last step's value, so it is derived
from exactly the numbers shown in the question, and :func:`evaluate_steps` re-checks it. All
intermediate values are non-negative integers, answers are positive, and every division is exact
(the ``%`` operation, "how many are left over after sharing equally", is the only remainder and
is used on purpose).

Levels:

1. one operation (``+``, ``-``, small ``*``) on numbers 2..20;
2. one operation (including ``*`` and exact ``/``) on numbers up to 100;
3. two steps;
4. three steps, numbers up to a few hundred;
5. four or five steps with larger numbers (rates, totals, change, remainders after sharing).

Numbers in questions are written as plain digits (no thousands separators, no number words),
and names contain no digits, so every literal of the solution appears verbatim in the text.

Generation is reproducible: the same ``(level, count, seed)`` gives the same problems on every
platform and Python run (the random generator is seeded from a string, which does not depend on
hash randomization).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from polar_vllm.data.answers import canonical_number
from polar_vllm.data.problems import MathProblem

__all__ = [
    "DEFAULT_SPLIT",
    "GENERATED_SOURCE",
    "LEVELS",
    "OPS",
    "Ref",
    "Splits",
    "Step",
    "WorkedProblem",
    "evaluate_steps",
    "generate_dataset",
    "generate_problems",
    "generate_worked_problems",
    "split_problems",
]

LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)
"""The difficulty levels of the generator."""

DEFAULT_SPLIT: tuple[int, int, int] = (1250, 250, 500)
"""Default train/val/test sizes *per level* (the paper's split)."""

GENERATED_SOURCE = "generated"
"""The ``source`` of generated problems."""

OPS: tuple[str, ...] = ("+", "-", "*", "/", "%")
"""Step operations: ``/`` is exact division, ``%`` the remainder (left over after sharing)."""


@dataclass(frozen=True)
class Ref:
    """Operand referring to the result of step ``index`` (0-based) of the same solution."""

    index: int


Operand = int | Ref


@dataclass(frozen=True)
class Step:
    """One solution step: ``a op b`` with ``op`` in :data:`OPS`."""

    op: str
    a: Operand
    b: Operand


@dataclass(frozen=True)
class WorkedProblem:
    """A generated problem with the solution steps its answer is computed from."""

    problem: MathProblem
    steps: tuple[Step, ...]
    template: str


class Splits(NamedTuple):
    """Disjoint train/validation/test splits."""

    train: list[MathProblem]
    val: list[MathProblem]
    test: list[MathProblem]


class _Reject(Exception):
    """Drawn numbers do not fit the template (negative or inexact result); draw again."""


def _apply(op: str, a: int, b: int) -> int:
    """``a op b`` for non-negative integer steps; raises :class:`_Reject` when not allowed."""
    if op == "+":
        return a + b
    if op == "-":
        if b > a:
            raise _Reject
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        if b <= 0 or a % b:
            raise _Reject
        return a // b
    if op == "%":
        if b <= 0:
            raise _Reject
        return a % b
    raise ValueError(f"unknown step operation {op!r}")


def evaluate_steps(steps: Sequence[Step]) -> int:
    """The value of the last step of ``steps`` (each operand a literal or an earlier step).

    Raises ``ValueError`` for an empty solution, a reference to a later step, a negative
    intermediate value or an inexact division.
    """
    if not steps:
        raise ValueError("empty solution")
    values: list[int] = []
    for i, step in enumerate(steps):
        operands = []
        for x in (step.a, step.b):
            if isinstance(x, Ref):
                if not 0 <= x.index < i:
                    raise ValueError(f"step {i} refers to step {x.index}")
                operands.append(values[x.index])
            else:
                operands.append(x)
        try:
            values.append(_apply(step.op, operands[0], operands[1]))
        except _Reject:
            raise ValueError(f"step {i} ({step}) is negative or inexact") from None
    return values[-1]


# --------------------------------------------------------------------------- vocabulary

_NAMES = (
    "Tom", "Maria", "Liam", "Aisha", "Noah", "Sofia", "Kenji", "Priya", "Lucas", "Emma",
    "Omar", "Chloe", "Diego", "Hannah", "Ravi", "Zoe", "Mateo", "Leila", "Jack", "Mei",
    "Samuel", "Fatima", "Oliver", "Nina", "Ethan", "Yuki", "Carlos", "Grace", "Ahmed", "Isla",
    "Ben", "Amara", "Felix", "Rosa", "Ivan", "Lena",
)  # fmt: skip
_OBJECTS = (
    "apples", "oranges", "marbles", "stickers", "pencils", "books", "cookies", "seashells",
    "stamps", "beads", "crayons", "toy cars", "baseball cards", "balloons", "erasers",
    "candies", "buttons", "flowers", "notebooks", "building blocks", "ribbons", "paper cranes",
    "postcards", "pinecones",
)  # fmt: skip
_CONTAINERS = (
    ("box", "boxes"), ("bag", "bags"), ("basket", "baskets"), ("jar", "jars"),
    ("pack", "packs"), ("crate", "crates"), ("bucket", "buckets"), ("tin", "tins"),
)  # fmt: skip
_FOODS = ("cookies", "muffins", "cupcakes", "pancakes", "dumplings", "brownies", "bagels", "tarts")
_BIRDS = ("birds", "sparrows", "pigeons", "crows", "robins", "parrots")
_PERCHES = ("fence", "tree", "roof", "wire", "branch")
_ITEMS = (
    ("ticket", "tickets"), ("notebook", "notebooks"), ("board game", "board games"),
    ("pizza", "pizzas"), ("backpack", "backpacks"), ("plant", "plants"), ("T-shirt", "T-shirts"),
    ("water bottle", "water bottles"), ("kite", "kites"), ("puzzle", "puzzles"),
)  # fmt: skip
_SHOPS = (
    ("bakery", "loaves of bread"), ("bookstore", "books"), ("flower shop", "roses"),
    ("toy store", "puzzles"), ("cafe", "sandwiches"), ("fruit stand", "melons"),
    ("hardware store", "hammers"), ("pet shop", "bags of fish food"),
)  # fmt: skip
_PRODUCE = ("eggs", "pumpkins", "potatoes", "carrots", "watermelons", "ears of corn", "cabbages")
_VEHICLES = ("train", "bus", "ferry", "tram", "subway car")
_ANIMALS = ("cows", "goats", "sheep", "chickens", "ducks", "pigs", "rabbits", "horses", "geese")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_GROUPS = (
    ("class", "boys", "girls", "students"),
    ("garden", "red roses", "white roses", "roses"),
    ("parking lot", "cars", "vans", "vehicles"),
    ("pond", "frogs", "turtles", "animals"),
    ("bookshelf", "novels", "comic books", "books"),
    ("zoo enclosure", "zebras", "giraffes", "animals"),
    ("band", "drummers", "guitarists", "musicians"),
    ("fruit bowl", "apples", "pears", "pieces of fruit"),
    ("toy box", "dolls", "teddy bears", "toys"),
    ("barn", "cows", "horses", "animals"),
)
_MOVES = (("cycles", "cycle"), ("walks", "walk"), ("runs", "run"), ("hikes", "hike"))
_STRIPS = ("rope", "ribbon", "wooden board", "piece of fabric", "garden hose", "cable")
_LENGTH_UNITS = ("centimeters", "meters", "inches", "feet")
_SPENDS = ("a new game", "lunch", "a jacket", "books", "a concert ticket", "art supplies")
_TANKS = ("tank", "pool", "barrel", "reservoir", "water tower")
_FRUITS = ("apples", "pears", "peaches", "plums", "oranges", "lemons")
_PRODUCTS = ("toys", "bottles", "lamps", "chairs", "phone cases", "mugs", "clocks")

_STATIONS = (
    "the main station", "the airport", "the city center", "the harbor", "the stadium",
    "the university", "the old town",
)  # fmt: skip
_JOBS = (
    "walking dogs", "babysitting", "at a cafe", "delivering newspapers", "mowing lawns",
    "tutoring",
)  # fmt: skip
_BOOKS = ("book", "novel", "comic book", "textbook", "biography", "mystery novel")
_CITIES = ("the coast", "the mountains", "a national park", "the capital", "a lake town")


class _Picker:
    """Random choices for templates."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def num(self, lo: int, hi: int) -> int:
        """Uniform integer in ``lo..hi``."""
        if lo > hi:
            raise _Reject
        return self.rng.randint(lo, hi)

    def pick(self, options: Sequence[str]) -> str:
        """One of ``options``."""
        return self.rng.choice(options)

    def pair(self, options: Sequence[tuple[str, ...]]) -> tuple[str, ...]:
        """One tuple of ``options``."""
        return self.rng.choice(options)

    def names(self, k: int) -> list[str]:
        """``k`` distinct names."""
        return self.rng.sample(_NAMES, k)

    def distinct(self, options: Sequence[str], k: int) -> list[str]:
        """``k`` distinct items of ``options``."""
        return self.rng.sample(list(options), k)

    def divisor(self, total: int, lo: int, hi: int) -> int:
        """A divisor of ``total`` in ``lo..hi``."""
        options = [d for d in range(lo, hi + 1) if total % d == 0]
        if not options:
            raise _Reject
        return self.rng.choice(options)


class _Builder:
    """Records solution steps while computing their values."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.values: list[int] = []

    def value(self, x: Operand) -> int:
        """Value of a literal or of a step result."""
        return self.values[x.index] if isinstance(x, Ref) else x

    def op(self, op: str, a: Operand, b: Operand) -> Ref:
        """Add step ``a op b`` and return a reference to its result."""
        self.values.append(_apply(op, self.value(a), self.value(b)))
        self.steps.append(Step(op, a, b))
        return Ref(len(self.steps) - 1)


_Template = Callable[[_Picker, _Builder], str]


# --------------------------------------------------------------------------- level 1


def _l1_buy_more(r: _Picker, b: _Builder) -> str:
    n, obj = r.names(1)[0], r.pick(_OBJECTS)
    x, y = r.num(2, 20), r.num(2, 20)
    verb = r.pick(("buys", "finds", "is given", "picks up", "wins"))
    b.op("+", x, y)
    return f"{n} has {x} {obj} and {verb} {y} more. How many {obj} does {n} have now?"


def _l1_give_away(r: _Picker, b: _Builder) -> str:
    n, m = r.names(2)
    obj = r.pick(_OBJECTS)
    x = r.num(4, 20)
    y = r.num(2, x - 1)
    b.op("-", x, y)
    return f"{n} has {x} {obj} and gives {y} of them to {m}. How many {obj} does {n} have left?"


def _l1_two_times(r: _Picker, b: _Builder) -> str:
    n, obj = r.names(1)[0], r.pick(_OBJECTS)
    x, y = r.num(2, 20), r.num(2, 20)
    verb = r.pick(("collected", "found", "made", "painted"))
    t1, t2 = r.pair((("in the morning", "in the afternoon"), ("on Saturday", "on Sunday")))
    b.op("+", x, y)
    return (
        f"{n} {verb} {x} {obj} {t1} and {y} {obj} {t2}. "
        f"How many {obj} did {n} {r.pick(('get', 'end up with'))} in all?"
    )


def _l1_groups(r: _Picker, b: _Builder) -> str:
    n, obj = r.names(1)[0], r.pick(_OBJECTS)
    one, many = r.pair(_CONTAINERS)
    x, y = r.num(2, 5), r.num(2, 10)
    b.op("*", x, y)
    return f"{n} has {x} {many} with {y} {obj} in each {one}. How many {obj} does {n} have?"


def _l1_more_than(r: _Picker, b: _Builder) -> str:
    n, m = r.names(2)
    obj = r.pick(_OBJECTS)
    x, y = r.num(2, 20), r.num(2, 20)
    b.op("+", x, y)
    return f"{n} has {x} {obj}. {m} has {y} more {obj} than {n}. How many {obj} does {m} have?"


def _l1_difference(r: _Picker, b: _Builder) -> str:
    n, m = r.names(2)
    obj = r.pick(_OBJECTS)
    x = r.num(4, 20)
    y = r.num(2, x - 1)
    b.op("-", x, y)
    return f"{n} has {x} {obj} and {m} has {y} {obj}. How many more {obj} does {n} have than {m}?"


def _l1_birds(r: _Picker, b: _Builder) -> str:
    birds, perch = r.pick(_BIRDS), r.pick(_PERCHES)
    x = r.num(4, 20)
    y = r.num(2, x - 1)
    sit = r.pick(("sitting", "resting", "perched"))
    leave = r.pick(("fly away", "fly off", "are scared away by a cat", "leave to look for food"))
    question = r.pick(
        (f"How many {birds} are still on the {perch}?", f"How many {birds} stay on the {perch}?")
    )
    b.op("-", x, y)
    return f"There are {x} {birds} {sit} on a {perch}. {y} of them {leave}. {question}"


def _l1_group_total(r: _Picker, b: _Builder) -> str:
    place, kind1, kind2, total = r.pair(_GROUPS)
    x, y = r.num(2, 20), r.num(2, 20)
    b.op("+", x, y)
    start = r.pick(
        (
            f"A {place} has {x} {kind1} and {y} {kind2}.",
            f"In a {place} there are {x} {kind1} and {y} {kind2}.",
            f"There are {x} {kind1} and {y} {kind2} in a {place}.",
        )
    )
    question = r.pick(
        (f"How many {total} are in the {place}?", f"How many {total} are there altogether?")
    )
    return f"{start} {question}"


def _l1_pages(r: _Picker, b: _Builder) -> str:
    n = r.names(1)[0]
    x, y = r.num(2, 10), r.num(2, 7)
    thing = r.pick(("pages", "words", "problems", "songs"))
    verb = {"pages": "reads", "words": "learns", "problems": "solves", "songs": "practices"}[thing]
    b.op("*", x, y)
    return f"{n} {verb} {x} {thing} every day. How many {thing} does {n} {verb[:-1]} in {y} days?"


def _l1_eat(r: _Picker, b: _Builder) -> str:
    n, food = r.names(1)[0], r.pick(_FOODS)
    x = r.num(4, 20)
    y = r.num(2, x - 1)
    verb = r.pick(("ate", "sold", "gave away", "dropped"))
    b.op("-", x, y)
    return f"{n} baked {x} {food} and {verb} {y} of them. How many {food} are left?"


# --------------------------------------------------------------------------- level 2


def _l2_shop_sales(r: _Picker, b: _Builder) -> str:
    shop, items = r.pair(_SHOPS)
    d1, d2 = r.distinct(_DAYS, 2)
    x, y = r.num(20, 100), r.num(20, 100)
    b.op("+", x, y)
    return (
        f"A {shop} sold {x} {items} on {d1} and {y} {items} on {d2}. "
        f"How many {items} did the {shop} sell on those two days?"
    )


def _l2_farmer_sells(r: _Picker, b: _Builder) -> str:
    produce, day = r.pick(_PRODUCE), r.pick(_DAYS)
    x = r.num(30, 100)
    y = r.num(10, x - 5)
    who = r.pick(("A farmer", "A grocer", "A market vendor", "A shopkeeper"))
    where = r.pick(("at the market", "to a restaurant", "to a school kitchen", "at the fair"))
    b.op("-", x, y)
    return (
        f"{who} had {x} {produce} and sold {y} of them {where} on {day}. "
        f"How many {produce} does the {who.split()[-1]} have left?"
    )


def _l2_packs(r: _Picker, b: _Builder) -> str:
    n, obj = r.names(1)[0], r.pick(_OBJECTS)
    one, many = r.pair(_CONTAINERS)
    x, y = r.num(3, 12), r.num(6, 25)
    b.op("*", x, y)
    return (
        f"{n} buys {x} {many} of {obj}. Each {one} contains {y} {obj}. "
        f"How many {obj} does {n} buy in total?"
    )


def _l2_share(r: _Picker, b: _Builder) -> str:
    n, obj = r.names(1)[0], r.pick(_OBJECTS)
    k = r.num(2, 10)
    total = k * r.num(3, 100 // k)
    who = r.pick(("friends", "classmates", "cousins", "teammates"))
    b.op("/", total, k)
    return (
        f"{n} has {total} {obj} and shares them equally among {k} {who}. "
        f"How many {obj} does each of them get?"
    )


def _l2_fill(r: _Picker, b: _Builder) -> str:
    n, obj = r.names(1)[0], r.pick(_OBJECTS)
    one, many = r.pair(_CONTAINERS)
    k = r.num(3, 12)
    total = k * r.num(3, 100 // k)
    b.op("/", total, k)
    return (
        f"{n} puts {total} {obj} into {many}, with {k} {obj} in each {one}. "
        f"How many {many} does {n} fill?"
    )


def _l2_price(r: _Picker, b: _Builder) -> str:
    n = r.names(1)[0]
    one, many = r.pair(_ITEMS)
    p, k = r.num(3, 40), r.num(2, 9)
    b.op("*", p, k)
    if r.num(0, 1):
        return f"One {one} costs ${p}. How many dollars do {k} {many} cost?"
    return f"{n} buys {k} {many} for ${p} each. How many dollars does {n} pay in total?"


def _l2_cut(r: _Picker, b: _Builder) -> str:
    n, strip, unit = r.names(1)[0], r.pick(_STRIPS), r.pick(_LENGTH_UNITS)
    x = r.num(20, 100)
    y = r.num(5, x - 5)
    b.op("-", x, y)
    return (
        f"A {strip} is {x} {unit} long. {n} cuts off {y} {unit}. "
        f"How many {unit} long is the rest of the {strip}?"
    )


def _l2_board(r: _Picker, b: _Builder) -> str:
    vehicle, station = r.pick(_VEHICLES), r.pick(_STATIONS)
    x, y = r.num(20, 100), r.num(10, 60)
    b.op("+", x, y)
    return (
        f"A {vehicle} leaves {station} with {x} passengers. At the next stop {y} more "
        f"passengers get on and nobody gets off. How many passengers are on the {vehicle} now?"
    )


def _l2_distance(r: _Picker, b: _Builder) -> str:
    n = r.names(1)[0]
    moves, move = r.pair(_MOVES)
    k = r.num(2, 7)
    total = k * r.num(3, 100 // k)
    b.op("/", total, k)
    return (
        f"{n} {moves} {total} kilometers in {k} days, covering the same distance each day. "
        f"How many kilometers does {n} {move} each day?"
    )


def _l2_fewer_points(r: _Picker, b: _Builder) -> str:
    n, m = r.names(2)
    x = r.num(30, 100)
    y = r.num(5, x - 10)
    game = r.pick(("a video game", "a quiz", "a basketball game", "a spelling contest"))
    b.op("-", x, y)
    return (
        f"{n} scored {x} points in {game}. {m} scored {y} fewer points than {n}. "
        f"How many points did {m} score?"
    )


# --------------------------------------------------------------------------- level 3


def _l3_buy_packs(r: _Picker, b: _Builder) -> str:
    n, obj = r.names(1)[0], r.pick(_OBJECTS)
    one, many = r.pair(_CONTAINERS)
    x, k, p = r.num(10, 100), r.num(2, 9), r.num(4, 20)
    bought = b.op("*", k, p)
    b.op("+", x, bought)
    return (
        f"{n} has {x} {obj}. Then {n} buys {k} {many} of {obj} with {p} {obj} in each {one}. "
        f"How many {obj} does {n} have now?"
    )


def _l3_give_two(r: _Picker, b: _Builder) -> str:
    n, m, o = r.names(3)
    obj = r.pick(_OBJECTS)
    x = r.num(40, 150)
    y = r.num(5, x // 2)
    z = r.num(5, x - y - 1)
    left = b.op("-", x, y)
    b.op("-", left, z)
    return (
        f"{n} had {x} {obj}. {n} gave {y} {obj} to {m} and {z} {obj} to {o}. "
        f"How many {obj} does {n} have left?"
    )


def _l3_change(r: _Picker, b: _Builder) -> str:
    n = r.names(1)[0]
    _, many = r.pair(_ITEMS)
    bill = r.pick(("20", "50", "100"))
    k = r.num(2, 6)
    p = r.num(2, (int(bill) - 1) // k)
    cost = b.op("*", k, p)
    b.op("-", int(bill), cost)
    return (
        f"{n} buys {k} {many} that cost ${p} each and pays with a ${bill} bill. "
        f"How many dollars of change does {n} get?"
    )


def _l3_share_boxes(r: _Picker, b: _Builder) -> str:
    n, obj = r.names(1)[0], r.pick(_OBJECTS)
    one, many = r.pair(_CONTAINERS)
    k, p = r.num(2, 9), r.num(4, 24)
    total = b.op("*", k, p)
    f = r.divisor(b.value(total), 2, 12)
    b.op("/", total, f)
    return (
        f"{n} has {k} {many} with {p} {obj} in each {one}. {n} shares all the {obj} equally "
        f"among {f} friends. How many {obj} does each friend get?"
    )


def _l3_wage(r: _Picker, b: _Builder) -> str:
    n, thing = r.names(1)[0], r.pick(_SPENDS)
    w, h = r.num(8, 25), r.num(3, 10)
    earned = b.op("*", w, h)
    s = r.num(5, b.value(earned) - 1)
    b.op("-", earned, s)
    return (
        f"{n} earns ${w} per hour and works {h} hours. Then {n} spends ${s} on {thing}. "
        f"How many dollars of the earnings does {n} have left?"
    )


def _l3_times_as_many(r: _Picker, b: _Builder) -> str:
    n, m = r.names(2)
    obj = r.pick(_OBJECTS)
    x, k = r.num(5, 40), r.num(2, 6)
    more = b.op("*", x, k)
    b.op("+", x, more)
    return (
        f"{n} has {x} {obj}. {m} has {k} times as many {obj} as {n}. "
        f"How many {obj} do {n} and {m} have together?"
    )


def _l3_bus_stop(r: _Picker, b: _Builder) -> str:
    vehicle, station = r.pick(_VEHICLES), r.pick(_STATIONS)
    x = r.num(20, 120)
    y = r.num(5, x - 5)
    z = r.num(5, 60)
    stop = r.pick(("At the first stop", "At the next station", "Halfway through the trip"))
    after = b.op("-", x, y)
    b.op("+", after, z)
    return (
        f"A {vehicle} leaves {station} with {x} passengers. {stop} {y} passengers get off and "
        f"{z} passengers get on. How many passengers are on the {vehicle} now?"
    )


def _l3_book_left(r: _Picker, b: _Builder) -> str:
    n, book = r.names(1)[0], r.pick(_BOOKS)
    p, d = r.num(5, 30), r.num(2, 9)
    total = r.num(p * d + 10, p * d + 200)
    when = r.pick(("a day", "every evening", "each morning", "a day on the bus"))
    read = b.op("*", p, d)
    b.op("-", total, read)
    return (
        f"{n}'s {book} has {total} pages. {n} reads {p} pages {when} for {d} days. "
        f"How many pages does {n} still have to read?"
    )


def _l3_trays(r: _Picker, b: _Builder) -> str:
    n, food = r.names(1)[0], r.pick(_FOODS)
    k, p = r.num(2, 8), r.num(6, 24)
    baked = b.op("*", k, p)
    c = r.num(3, b.value(baked) - 1)
    verb = r.pick(("gives away", "sells", "packs for a picnic"))
    b.op("-", baked, c)
    return (
        f"{n} bakes {k} trays of {food} with {p} {food} on each tray and {verb} {c} of them. "
        f"How many {food} does {n} have left?"
    )


def _l3_weekend_jars(r: _Picker, b: _Builder) -> str:
    n, obj = r.names(1)[0], r.pick(_OBJECTS)
    one, many = r.pair(_CONTAINERS)
    d1, d2 = r.distinct(_DAYS, 2)
    x, y = r.num(10, 90), r.num(10, 90)
    total = b.op("+", x, y)
    k = r.divisor(b.value(total), 2, 12)
    b.op("/", total, k)
    return (
        f"{n} collected {x} {obj} on {d1} and {y} {obj} on {d2}, and puts them equally into "
        f"{k} {many}. How many {obj} go in each {one}?"
    )


# --------------------------------------------------------------------------- level 4


def _l4_stock(r: _Picker, b: _Builder) -> str:
    shop, items = r.pair(_SHOPS)
    x = r.num(150, 500)
    y = r.num(20, x // 3)
    z = r.num(20, x // 3)
    d = r.num(50, 300)
    day = r.pick(_DAYS)
    delivery = r.pick(("a delivery brings", "a truck drops off", "the owner orders"))
    after_morning = b.op("-", x, y)
    after_day = b.op("-", after_morning, z)
    b.op("+", after_day, d)
    return (
        f"On {day} a {shop} starts with {x} {items}. It sells {y} in the morning and {z} in the "
        f"afternoon, and then {delivery} {d} more. How many {items} does the {shop} have now?"
    )


def _l4_shopping(r: _Picker, b: _Builder) -> str:
    n = r.names(1)[0]
    (_, many1), (_, many2) = r.rng.sample(_ITEMS, 2)
    x, p, y, q = r.num(2, 12), r.num(5, 60), r.num(2, 12), r.num(5, 60)
    first = b.op("*", x, p)
    second = b.op("*", y, q)
    b.op("+", first, second)
    return (
        f"{n} buys {x} {many1} at ${p} each and {y} {many2} at ${q} each. "
        f"How many dollars does {n} spend?"
    )


def _l4_savings_jars(r: _Picker, b: _Builder) -> str:
    n, job = r.names(1)[0], r.pick(_JOBS)
    jars = r.pick(("savings jars", "piggy banks", "envelopes", "bank accounts"))
    w, k = r.num(15, 90), r.num(3, 12)
    earned = b.op("*", w, k)
    f = r.num(2, 6)
    s = r.num(10, b.value(earned) // 2)
    s += (b.value(earned) - s) % f  # make the rest divisible by f
    rest = b.op("-", earned, s)
    b.op("/", rest, f)
    return (
        f"{n} earns ${w} per week {job} for {k} weeks and spends ${s} of it. {n} splits the "
        f"rest equally among {f} {jars}. How many dollars go in each one?"
    )


def _l4_teams(r: _Picker, b: _Builder) -> str:
    k, p = r.num(4, 15), r.num(18, 32)
    students = b.op("*", k, p)
    t = r.num(3, 8)
    c = t * r.num(1, 4) + b.value(students) % t
    if c < 2:
        c += t
    present = b.op("-", students, c)
    b.op("/", present, t)
    school, group, people = r.pair(
        (
            ("A school", "classes", "students"),
            ("A summer camp", "cabins", "campers"),
            ("A sports club", "squads", "members"),
            ("A scout troop", "patrols", "scouts"),
        )
    )
    event = r.pick(("sports day", "a field trip", "science day", "the fair", "a hiking day"))
    teams = r.pick(("teams", "groups"))
    return (
        f"{school} has {k} {group} with {p} {people} each. On {event} {c} {people} are absent "
        f"and the rest are split into {teams} of {t}. How many {teams} are there?"
    )


def _l4_farm_two(r: _Picker, b: _Builder) -> str:
    a1, a2, a3 = r.distinct(_ANIMALS, 3)
    x, k = r.num(10, 80), r.num(2, 5)
    second = b.op("*", x, k)
    c = r.num(5, b.value(second) - 1)
    third = b.op("-", second, c)
    b.op("+", second, third)
    return (
        f"A farm has {x} {a1}. There are {k} times as many {a2} as {a1}, and {c} fewer {a3} "
        f"than {a2}. How many {a2} and {a3} are there altogether?"
    )


def _l4_tank(r: _Picker, b: _Builder) -> str:
    tank, unit = r.pick(_TANKS), r.pick(("liters", "gallons"))
    x, rate, t = r.num(50, 400), r.num(5, 30), r.num(3, 20)
    added = b.op("*", rate, t)
    full = b.op("+", x, added)
    d = r.num(20, b.value(full) - 1)
    used = r.pick(("used", "drained", "pumped out", "used to water the garden"))
    b.op("-", full, d)
    return (
        f"A {tank} holds {x} {unit} of water. Water flows in at {rate} {unit} per minute for "
        f"{t} minutes, and then {d} {unit} are {used}. How many {unit} are in the {tank} now?"
    )


def _l4_drive(r: _Picker, b: _Builder) -> str:
    n = r.names(1)[0]
    s1, t1, s2, t2 = r.num(30, 90), r.num(2, 6), r.num(30, 90), r.num(2, 6)
    verb = r.pick(("drives", "rides", "travels"))
    first = b.op("*", s1, t1)
    second = b.op("*", s2, t2)
    b.op("+", first, second)
    return (
        f"{n} {verb} at {s1} kilometers per hour for {t1} hours, then at {s2} kilometers per "
        f"hour for {t2} hours. How many kilometers does {n} travel in total?"
    )


def _l4_teacher_packs(r: _Picker, b: _Builder) -> str:
    obj = r.pick(_OBJECTS)
    who = r.pick(("A teacher", "A coach", "A camp leader", "A librarian"))
    k, p = r.num(4, 15), r.num(10, 30)
    bought = b.op("*", k, p)
    s = r.num(10, 35)
    c = r.num(2, max(2, b.value(bought) // s))
    given = b.op("*", c, s)
    b.op("-", bought, given)
    return (
        f"{who} buys {k} packs of {p} {obj} and gives {c} {obj} to each of {s} children. "
        f"How many {obj} are left over?"
    )


def _l4_bakery_boxes(r: _Picker, b: _Builder) -> str:
    food = r.pick(_FOODS)
    maker = r.pick(("A bakery", "A cafe", "A school kitchen", "A street vendor", "A caterer"))
    x, d = r.num(20, 120), r.num(3, 7)
    made = b.op("*", x, d)
    box = r.pick(("4", "6", "8", "10", "12"))
    k = int(box)
    s = r.num(10, b.value(made) // 2)
    s += (b.value(made) - s) % k
    rest = b.op("-", made, s)
    b.op("/", rest, k)
    sells = r.pick(("sells", "gives away", "serves"))
    return (
        f"{maker} makes {x} {food} a day for {d} days. It {sells} {s} of them and packs the "
        f"rest into boxes of {box}. How many boxes does it fill?"
    )


def _l4_allowance(r: _Picker, b: _Builder) -> str:
    n, thing = r.names(1)[0], r.pick(_SPENDS)
    x, w, k = r.num(10, 200), r.num(5, 40), r.num(3, 12)
    got = b.op("*", w, k)
    total = b.op("+", x, got)
    c = r.num(10, b.value(total) - 1)
    b.op("-", total, c)
    return (
        f"{n} has ${x}. {n} gets ${w} every week for {k} weeks and then spends ${c} on {thing}. "
        f"How many dollars does {n} have now?"
    )


# --------------------------------------------------------------------------- level 5


def _l5_factory(r: _Picker, b: _Builder) -> str:
    product = r.pick(_PRODUCTS)
    place = r.pick(("factory", "workshop", "plant", "small company"))
    bad = r.pick(("faulty", "damaged", "rejected by inspectors", "missing parts"))
    rate, h, d = r.num(20, 150), r.num(4, 12), r.num(3, 8)
    per_day = b.op("*", rate, h)
    made = b.op("*", per_day, d)
    box = int(r.pick(("6", "8", "10", "12", "20", "24", "25", "50")))
    x = b.value(made) % box + box * r.num(1, 8)
    good = b.op("-", made, x)
    b.op("/", good, box)
    return (
        f"A {place} makes {rate} {product} per hour, {h} hours a day, for {d} days. {x} of the "
        f"{product} are {bad} and the rest are packed in boxes of {box}. "
        f"How many boxes are filled?"
    )


def _l5_change(r: _Picker, b: _Builder) -> str:
    n = r.names(1)[0]
    (_, many1), (_, many2) = r.rng.sample(_ITEMS, 2)
    x, p, y, q = r.num(3, 15), r.num(8, 80), r.num(3, 15), r.num(8, 80)
    first = b.op("*", x, p)
    second = b.op("*", y, q)
    cost = b.op("+", first, second)
    pay = (b.value(cost) // 100 + r.num(1, 5)) * 100
    b.op("-", pay, cost)
    return (
        f"{n} buys {x} {many1} at ${p} each and {y} {many2} at ${q} each, and pays with "
        f"${pay}. How many dollars of change does {n} receive?"
    )


def _l5_farm_total(r: _Picker, b: _Builder) -> str:
    a1, a2, a3 = r.distinct(_ANIMALS, 3)
    x, k = r.num(20, 200), r.num(2, 6)
    second = b.op("*", x, k)
    c = r.num(10, b.value(second) - 1)
    third = b.op("-", second, c)
    two = b.op("+", x, second)
    b.op("+", two, third)
    return (
        f"A farm has {x} {a1}. It has {k} times as many {a2} as {a1} and {c} fewer {a3} than "
        f"{a2}. How many {a1}, {a2} and {a3} does the farm have in total?"
    )


def _l5_leftover(r: _Picker, b: _Builder) -> str:
    n, m = r.names(2)
    obj = r.pick(_OBJECTS)
    a, d, g = r.num(12, 90), r.num(5, 14), r.num(10, 150)
    collected = b.op("*", a, d)
    total = b.op("+", collected, g)
    x = r.num(10, b.value(total) // 3)
    rest = b.op("-", total, x)
    f = r.num(7, 25)
    if b.value(rest) % f == 0:
        raise _Reject  # keep "left over" meaningful
    b.op("%", rest, f)
    return (
        f"{n} collects {a} {obj} every day for {d} days, gets {g} more as a gift, and gives "
        f"{x} to {m}. {n} then shares the remaining {obj} equally among {f} friends, giving each "
        f"friend as many as possible. How many {obj} are left over?"
    )


def _l5_savings(r: _Picker, b: _Builder) -> str:
    n, job = r.names(1)[0], r.pick(_JOBS)
    w, h = r.num(10, 40), r.num(8, 30)
    weekly = b.op("*", w, h)
    s = r.num(20, b.value(weekly) - 10)
    saved = b.op("-", weekly, s)
    k, a = r.num(4, 20), r.num(50, 900)
    total_saved = b.op("*", saved, k)
    b.op("+", a, total_saved)
    return (
        f"{n} already has ${a} in savings. {n} earns ${w} per hour {job}, works {h} hours each "
        f"week and spends ${s} each week. How many dollars will {n} have in savings after {k} "
        f"weeks?"
    )


def _l5_theater(r: _Picker, b: _Builder) -> str:
    venue = r.pick(("theater", "concert hall", "stadium section", "cinema", "school auditorium"))
    show = r.pick(("a show", "a concert", "a play", "a film premiere", "a talent contest"))
    extra = r.pick(("snacks", "parking", "programs", "drinks"))
    rows, seats = r.num(10, 40), r.num(12, 40)
    total = b.op("*", rows, seats)
    e = r.num(5, b.value(total) // 3)
    sold = b.op("-", total, e)
    p, x = r.num(8, 60), r.num(100, 2000)
    sales = b.op("*", sold, p)
    b.op("+", sales, x)
    return (
        f"A {venue} has {rows} rows of {seats} seats. For {show} {e} seats stay empty and all "
        f"the other seats are sold for ${p} each. The {venue} also earns ${x} from {extra}. "
        f"How many dollars does the {venue} take in?"
    )


def _l5_trip_left(r: _Picker, b: _Builder) -> str:
    n, city = r.names(1)[0], r.pick(_CITIES)
    verb = r.pick(("drives", "rides", "travels"))
    s1, t1, s2, t2 = r.num(40, 110), r.num(2, 8), r.num(40, 110), r.num(2, 8)
    first = b.op("*", s1, t1)
    second = b.op("*", s2, t2)
    driven = b.op("+", first, second)
    total = b.value(driven) + r.num(20, 600)
    b.op("-", total, driven)
    return (
        f"{n} plans a {total}-kilometer trip to {city}. {n} {verb} at {s1} kilometers per hour "
        f"for {t1} hours, then at {s2} kilometers per hour for {t2} hours. "
        f"How many kilometers of the trip are left?"
    )


def _l5_library(r: _Picker, b: _Builder) -> str:
    place = r.pick(("library", "school library", "used bookshop", "community center"))
    out = r.pick(("borrowed", "lent out", "sold", "sent away for repair"))
    come = r.pick(("donated", "bought", "returned from another branch"))
    k, p = r.num(10, 60), r.num(20, 80)
    books = b.op("*", k, p)
    borrowed = r.num(20, b.value(books) // 2)
    after = b.op("-", books, borrowed)
    shelves = r.num(8, 40)
    donated = r.num(10, 300)
    donated += (-(b.value(after) + donated)) % shelves
    total = b.op("+", after, donated)
    b.op("/", total, shelves)
    return (
        f"A {place} has {k} shelves with {p} books each. {borrowed} books are {out} and "
        f"{donated} new books are {come}. The books are then arranged equally on {shelves} "
        f"shelves. How many books are on each shelf?"
    )


def _l5_school_trip(r: _Picker, b: _Builder) -> str:
    place = r.pick(("museum", "zoo", "science center", "aquarium", "planetarium", "theme park"))
    kids, adults = r.pair(
        (("student", "teacher"), ("child", "parent"), ("camper", "counselor"), ("pupil", "helper"))
    )
    kids_pl = "children" if kids == "child" else f"{kids}s"
    deal = r.pick(("a discount of", "a coupon worth", "a group discount of"))
    a, t = r.num(8, 45), r.num(12, 60)
    c, d = r.num(30, 250), r.num(3, 20)
    students = b.op("*", a, c)
    teachers = b.op("*", t, d)
    cost = b.op("+", students, teachers)
    e = r.num(20, b.value(cost) // 4)
    b.op("-", cost, e)
    return (
        f"A trip to the {place} costs ${a} for each {kids} and ${t} for each {adults}. {c} "
        f"{kids_pl} and {d} {adults}s go, and the group gets {deal} ${e}. "
        f"How many dollars does the trip cost?"
    )


def _l5_two_pumps(r: _Picker, b: _Builder) -> str:
    tank, unit = r.pick(_TANKS), r.pick(("liters", "gallons"))
    used = r.pick(("drained", "used", "pumped out", "used to water the fields"))
    ra, rb, t = r.num(10, 60), r.num(10, 60), r.num(10, 45)
    a = r.num(100, 2000)
    first = b.op("*", ra, t)
    second = b.op("*", rb, t)
    pumped = b.op("+", first, second)
    full = b.op("+", a, pumped)
    d = r.num(50, b.value(full) // 2)
    b.op("-", full, d)
    return (
        f"A {tank} already holds {a} {unit} of water. One pump adds {ra} {unit} per minute and "
        f"another adds {rb} {unit} per minute, and both run for {t} minutes. Then {d} {unit} "
        f"are {used}. How many {unit} are in the {tank} now?"
    )


def _l5_orchard(r: _Picker, b: _Builder) -> str:
    fruit = r.pick(_FRUITS)
    place = r.pick(("An orchard", "A fruit farm", "A hillside farm"))
    bad = r.pick(("bruised", "too small to sell", "eaten by birds", "rotten"))
    shops = r.pick(("stores", "markets", "schools", "restaurants"))
    rows, trees, per_tree = r.num(5, 30), r.num(6, 25), r.num(20, 90)
    n_trees = b.op("*", rows, trees)
    picked = b.op("*", n_trees, per_tree)
    stores = r.num(3, 15)
    x = b.value(picked) % stores + stores * r.num(2, 20)
    good = b.op("-", picked, x)
    b.op("/", good, stores)
    return (
        f"{place} has {rows} rows of {trees} trees, and each tree gives {per_tree} {fruit}. "
        f"{x} of the {fruit} are {bad} and the rest are shared equally among {stores} {shops}. "
        f"How many {fruit} does each of the {shops} get?"
    )


_TEMPLATES: dict[int, tuple[_Template, ...]] = {
    1: (
        _l1_buy_more, _l1_give_away, _l1_two_times, _l1_groups, _l1_more_than,
        _l1_difference, _l1_birds, _l1_group_total, _l1_pages, _l1_eat,
    ),
    2: (
        _l2_shop_sales, _l2_farmer_sells, _l2_packs, _l2_share, _l2_fill, _l2_price, _l2_cut,
        _l2_board, _l2_distance, _l2_fewer_points,
    ),
    3: (
        _l3_buy_packs, _l3_give_two, _l3_change, _l3_share_boxes, _l3_wage, _l3_times_as_many,
        _l3_bus_stop, _l3_book_left, _l3_trays, _l3_weekend_jars,
    ),
    4: (
        _l4_stock, _l4_shopping, _l4_savings_jars, _l4_teams, _l4_farm_two, _l4_tank,
        _l4_drive, _l4_teacher_packs, _l4_bakery_boxes, _l4_allowance,
    ),
    5: (
        _l5_factory, _l5_change, _l5_farm_total, _l5_leftover, _l5_savings, _l5_theater,
        _l5_trip_left, _l5_library, _l5_school_trip, _l5_two_pumps, _l5_orchard,
    ),
}  # fmt: skip

_STEP_RANGE = {1: (1, 1), 2: (1, 1), 3: (2, 2), 4: (3, 3), 5: (4, 5)}
_INT_RE = re.compile(r"\d+")
_MAX_ATTEMPTS_PER_PROBLEM = 200


def _check_level(level: int) -> None:
    if level not in _TEMPLATES:
        raise ValueError(f"generator level must be one of {LEVELS}, got {level!r}")


def _draw(level: int, picker: _Picker) -> tuple[str, tuple[Step, ...], str]:
    """One problem of ``level``: question, solution steps and template name."""
    template = picker.rng.choice(_TEMPLATES[level])
    builder = _Builder()
    question = template(picker, builder)
    steps = tuple(builder.steps)
    if builder.values[-1] == 0:
        raise _Reject  # keep answers positive
    lo, hi = _STEP_RANGE[level]
    shown = set(_INT_RE.findall(question))
    literals = [x for s in steps for x in (s.a, s.b) if not isinstance(x, Ref)]
    if not lo <= len(steps) <= hi or any(str(x) not in shown for x in literals):
        raise AssertionError(f"template {template.__name__} is inconsistent: {question!r}")
    return question, steps, template.__name__.lstrip("_")


def generate_worked_problems(level: int, count: int, seed: int) -> list[WorkedProblem]:
    """``count`` distinct problems of ``level`` with their solution steps.

    Reproducible: the same arguments give identical output. Ids are
    ``f"gen-L{level}-s{seed}-{i:05d}"``; the source is :data:`GENERATED_SOURCE`.
    Raises ``ValueError`` for an unknown level or a negative count, and ``RuntimeError`` if
    ``count`` distinct questions cannot be found (far beyond the default split sizes).
    """
    _check_level(level)
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    picker = _Picker(random.Random(f"polar-vllm-generator:{level}:{seed}"))
    seen: set[str] = set()
    out: list[WorkedProblem] = []
    attempts = 0
    while len(out) < count:
        attempts += 1
        if attempts > _MAX_ATTEMPTS_PER_PROBLEM * (count + 10):
            raise RuntimeError(
                f"could not generate {count} distinct level-{level} problems "
                f"(got {len(out)} after {attempts - 1} draws)"
            )
        try:
            question, steps, template = _draw(level, picker)
        except _Reject:
            continue
        if question in seen:
            continue
        seen.add(question)
        problem = MathProblem(
            id=f"gen-L{level}-s{seed}-{len(out):05d}",
            question=question,
            answer=canonical_number(evaluate_steps(steps)),
            level=level,
            source=GENERATED_SOURCE,
        )
        out.append(WorkedProblem(problem=problem, steps=steps, template=template))
    return out


def generate_problems(level: int, count: int, seed: int) -> list[MathProblem]:
    """``count`` distinct generated problems of difficulty ``level`` (1..5), reproducibly.

    Same arguments give identical output; other seeds or levels give other questions. See
    :func:`generate_worked_problems` for the ids and errors.
    """
    return [w.problem for w in generate_worked_problems(level, count, seed)]


def generate_dataset(
    levels: Iterable[int] = LEVELS, count_per_level: int = sum(DEFAULT_SPLIT), seed: int = 0
) -> list[MathProblem]:
    """Problems of every level in ``levels`` (``count_per_level`` each), level by level.

    The default is 2000 problems per level, enough for :data:`DEFAULT_SPLIT`.
    """
    out: list[MathProblem] = []
    for level in levels:
        out.extend(generate_problems(level, count_per_level, seed))
    return out


def split_problems(
    problems: Sequence[MathProblem],
    train: int = DEFAULT_SPLIT[0],
    val: int = DEFAULT_SPLIT[1],
    test: int = DEFAULT_SPLIT[2],
    seed: int = 0,
) -> Splits:
    """Disjoint train/val/test splits with ``train``/``val``/``test`` problems *per level*.

    Problems are grouped by ``level`` (``None`` is a group of its own), each group is shuffled
    reproducibly by ``seed`` and cut into the three parts; problems beyond
    ``train + val + test`` in a group are left out. Within a split, problems keep their input
    order. Raises ``ValueError`` for negative sizes, duplicate ids, or a group with fewer than
    ``train + val + test`` problems.
    """
    if min(train, val, test) < 0:
        raise ValueError(f"split sizes must be >= 0, got {(train, val, test)}")
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise ValueError("split_problems needs unique problem ids")
    groups: dict[int | None, list[int]] = {}
    for i, p in enumerate(problems):
        groups.setdefault(p.level, []).append(i)
    need = train + val + test
    chosen: list[set[int]] = [set(), set(), set()]
    for level, members in groups.items():
        if len(members) < need:
            raise ValueError(
                f"level {level} has {len(members)} problems, fewer than {need} "
                f"(train {train} + val {val} + test {test})"
            )
        order = list(members)
        random.Random(f"polar-vllm-split:{seed}:{level}").shuffle(order)
        chosen[0].update(order[:train])
        chosen[1].update(order[train : train + val])
        chosen[2].update(order[train + val : need])
    parts = [[p for i, p in enumerate(problems) if i in part] for part in chosen]
    return Splits(train=parts[0], val=parts[1], test=parts[2])
