"""Tests for polar_vllm.program: parsing, validation, formatting and the canonical PoLar form."""

from __future__ import annotations

import functools
import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polar_vllm.program import (
    FULL,
    MAX_SEGMENT_LEN,
    PolarForm,
    ProgramError,
    SegmentOp,
    canonical_polar_form,
    describe_program,
    executed_layers,
    format_program,
    full_program,
    parse_program,
    program_steps,
    validate_program,
)

D = 30
SKIP, KEEP, REPEAT = SegmentOp.SKIP, SegmentOp.KEEP, SegmentOp.REPEAT


def form_from_lengths(lengths, ops, max_segment_len=MAX_SEGMENT_LEN):
    """Build a PolarForm from segment lengths and ops."""
    boundaries = []
    for length in lengths:
        boundaries += [True] + [False] * (length - 1)
    return PolarForm(tuple(boundaries), tuple(ops), max_segment_len)


# --------------------------------------------------------------------------- parsing examples


def test_contract_example():
    program = parse_program("0-9,8-9,10-29", D)
    assert program == (*range(10), 8, 9, *range(10, 30))
    assert isinstance(program, tuple)
    assert executed_layers(program) == 32
    assert format_program(program) == "0-9,8-29"


@pytest.mark.parametrize("spec", ["full", "FULL", " Full\n", "\tfUlL  ", FULL])
def test_full(spec):
    assert parse_program(spec, D) == tuple(range(D))
    assert parse_program(spec, 1) == (0,)
    assert full_program(D) == tuple(range(D))


@pytest.mark.parametrize("spec", ["", "   ", "\n\t ", "[]", " [ ] ", [], ()])
def test_empty(spec):
    assert parse_program(spec, D) == ()


@pytest.mark.parametrize(
    "spec",
    [
        "0,1,2,3,2,3",
        " 0 - 3 , 2-3 ",
        "0-\n3,\t2 -3",
        "[0, 1, 2, 3, 2, 3]",
        " [0,1,2,3,\n 2,3] ",
        [0, 1, 2, 3, 2, 3],
        (0, 1, 2, 3, 2, 3),
    ],
)
def test_equivalent_spellings(spec):
    assert parse_program(spec, D) == (0, 1, 2, 3, 2, 3)


def test_single_items_and_ranges():
    assert parse_program("7", D) == (7,)
    assert parse_program("7-7", D) == (7,)
    assert parse_program("29,0", D) == (29, 0)
    assert parse_program("007", D) == (7,)
    assert parse_program("5,5", D) == (5, 5)
    assert parse_program("5,5,5", D, max_passes=3) == (5, 5, 5)
    assert parse_program("0-29,0-29", D) == tuple(range(D)) * 2


def test_validate_program():
    assert validate_program([3, 1, 3], D) == (3, 1, 3)
    assert validate_program((), D) == ()
    assert validate_program(range(D), D) == full_program(D)


# --------------------------------------------------------------------------- rejection


def raises(spec, pattern, depth=D, max_passes=2):
    with pytest.raises(ProgramError, match=pattern) as info:
        parse_program(spec, depth, max_passes)
    message = str(info.value)
    assert message.startswith("polar program"), message
    assert isinstance(info.value, ValueError)
    return message


@pytest.mark.parametrize(
    ("spec", "item"),
    [("0,1,31", "item 3 '31'"), ("30", "item 1 '30'"), ("4-9,25-30", "item 2 '25-30'")],
)
def test_out_of_range(spec, item):
    message = raises(spec, re.escape(item) + " is out of range")
    assert "depth 30" in message
    assert "valid layers 0..29" in message


def test_out_of_range_message_exact():
    with pytest.raises(ProgramError) as info:
        parse_program("0,1,31", D)
    assert str(info.value) == (
        "polar program item 3 '31' is out of range for a model of depth 30 (valid layers 0..29)"
    )


def test_huge_range_is_cheap_and_rejected():
    raises("0-99999999999999", r"item 1 '0-99999999999999' is out of range.*depth 30")
    raises("9" * 5000, r"item 1 '9+\.\.\.' is out of range.*depth 30")


def test_too_many_passes():
    message = raises("5,5,5", r"item 3 '5': layer 5 appears 3 times but max_passes is 2")
    assert "model depth 30" in message
    raises("0-9,3-6,5", r"item 3 '5': layer 5 appears 3 times")
    raises("0-9,0-9,8-9", r"item 3 '8-9': layer 8 appears 3 times")
    raises("1,1", r"item 2 '1': layer 1 appears 2 times but max_passes is 1", max_passes=1)
    raises([2, 2, 2], r"item 3 '2': layer 2 appears 3 times.*depth 30")
    raises("[2, 2, 2]", r"item 3 '2': layer 2 appears 3 times.*depth 30")


def test_bad_range():
    raises("0,9-3", r"item 2 '9-3' is a bad range: start 9 > end 3 \(model depth 30\)")


@pytest.mark.parametrize(
    ("spec", "item"),
    [
        ("a", "item 1 'a'"),
        ("1-", "item 1 '1-'"),
        ("0,-3", "item 2 '-3'"),
        ("1--2", "item 1 '1--2'"),
        ("1.5", "item 1 '1.5'"),
        ("0,1,2-3-4", "item 3 '2-3-4'"),
        ("1 e3", "item 1 '1e3'"),
        ("0x1", "item 1 '0x1'"),
        ("٣", "item 1 '٣'"),  # a non-ASCII digit
        ("full,1", "item 1 'full'"),
        ("null", "item 1 'null'"),
    ],
)
def test_malformed(spec, item):
    raises(spec, re.escape(item) + r" is malformed \(model depth 30\)")


@pytest.mark.parametrize(
    ("spec", "item"), [("1,,2", "item 2 ''"), (",", "item 1 ''"), ("1,", "item 2 ''")]
)
def test_empty_item(spec, item):
    raises(spec, re.escape(item) + r" is empty \(model depth 30\)")


@pytest.mark.parametrize("spec", ["[1, 2", "[1,]", "[1] x", "[01]", "[" * 100000])
def test_bad_json(spec):
    raises(spec, r"is not valid JSON.*model depth 30")


@pytest.mark.parametrize(
    ("spec", "item"),
    [
        ("[1, true]", "item 2 'true'"),
        ("[1.5]", "item 1 '1.5'"),
        ("[1.0]", "item 1 '1.0'"),
        ("[1e3]", "item 1 '1000.0'"),
        ('[0, "1"]', "item 2 '\"1\"'"),
        ("[null]", "item 1 'null'"),
        ("[[1]]", "item 1 '[1]'"),
    ],
)
def test_json_non_int(spec, item):
    raises(spec, re.escape(item) + r" of JSON list is not an int.*model depth 30")


def test_json_out_of_range_and_negative():
    raises("[0, 30]", r"item 2 '30' is out of range for a model of depth 30")
    raises("[0, -1]", r"item 2 '-1' is out of range for a model of depth 30")


@pytest.mark.parametrize(
    ("spec", "item"),
    [
        ([0, True], "item 2 'True' is not an int layer index (got bool,"),
        ([False], "item 1 'False' is not an int layer index (got bool,"),
        ((1.0,), "item 1 '1.0' is not an int layer index (got float,"),
        ([1, "2"], "item 2 '2' is not an int layer index (got str,"),
        ([None], "item 1 'None' is not an int layer index (got NoneType,"),
    ],
)
def test_python_non_int(spec, item):
    raises(spec, re.escape(item) + r" model depth 30\)")
    with pytest.raises(ProgramError, match=re.escape(item)):
        validate_program(spec, D)


def test_python_negative():
    raises([0, -1], r"item 2 '-1' is out of range.*depth 30")
    with pytest.raises(ProgramError, match=r"item 1 '-3' is out of range.*depth 30"):
        validate_program((-3,), D)


@pytest.mark.parametrize("spec", [None, 3, 1.5, b"0,1", bytearray(b"1"), {0: 1}, {1, 2}])
def test_wrong_types(spec):
    raises(spec, r"spec must be a list or tuple of ints, got \w+ \(model depth 30\)")


def test_validate_rejects_text():
    with pytest.raises(ProgramError, match=r"must be a list or tuple of ints, got str"):
        validate_program("0,1", D)


@pytest.mark.parametrize("depth", [0, -1, True, 2.0, None])
def test_bad_depth(depth):
    with pytest.raises(ProgramError, match=r"^polar program depth must be an int >= 1"):
        parse_program("0", depth)
    with pytest.raises(ValueError, match="depth"):
        validate_program([0], depth)
    with pytest.raises(ValueError, match="depth"):
        full_program(depth)


@pytest.mark.parametrize("max_passes", [0, -2, False])
def test_bad_max_passes(max_passes):
    with pytest.raises(ProgramError, match=r"^polar program max_passes must be an int >= 1"):
        parse_program("0", D, max_passes)


garbage_text = st.one_of(
    st.text(),
    st.text(alphabet="0123456789-,[] \t\n.eE+truefalsnl\"'{}:fullFULL", max_size=40),
    st.lists(st.integers(-5, 40).map(str), max_size=8).map(",".join),
    st.lists(st.tuples(st.integers(-5, 40), st.integers(-5, 40)), max_size=6).map(
        lambda pairs: ",".join(f"{a}-{b}" for a, b in pairs)
    ),
)
garbage_value = st.one_of(
    garbage_text,
    st.none(),
    st.integers(),
    st.floats(),
    st.binary(max_size=8),
    st.lists(st.one_of(st.integers(-5, 40), st.booleans(), st.floats(), st.text(max_size=3))),
    st.tuples(st.integers(-5, 40), st.integers(-5, 40)),
    st.dictionaries(st.integers(), st.integers(), max_size=3),
)


@settings(max_examples=600, deadline=None)
@given(spec=garbage_value, depth=st.integers(1, 40), max_passes=st.integers(1, 3))
def test_garbage_never_crashes(spec, depth, max_passes):
    try:
        program = parse_program(spec, depth, max_passes)
    except ProgramError as exc:
        assert str(exc).startswith("polar program")
        assert f"depth {depth}" in str(exc)
        return
    assert isinstance(program, tuple)
    assert all(type(layer) is int and 0 <= layer < depth for layer in program)
    assert all(program.count(layer) <= max_passes for layer in program)
    assert validate_program(program, depth, max_passes) == program


# --------------------------------------------------------------------------- formatting


def test_format_examples():
    assert format_program(()) == ""
    assert format_program((5,)) == "5"
    assert format_program((0, 1)) == "0-1"
    assert format_program((3, 2)) == "3,2"
    assert format_program((0, 1, 2, 3, 2, 3)) == "0-3,2-3"
    assert format_program((4, 4)) == "4,4"
    assert format_program((0, 2, 3, 4, 9)) == "0,2-4,9"
    assert format_program(full_program(D)) == "0-29"
    with pytest.raises(ProgramError, match=r"^polar program item 2 '-1'"):
        format_program((0, -1))


@st.composite
def valid_programs(draw, max_depth=40, max_passes=2):
    depth = draw(st.integers(1, max_depth))
    pool = [layer for layer in range(depth) for _ in range(max_passes)]
    program = draw(st.lists(st.sampled_from(pool), max_size=max_passes * depth))
    # Drop passes beyond the limit (sampling may draw a layer too often).
    seen: dict[int, int] = {}
    kept = []
    for layer in program:
        seen[layer] = seen.get(layer, 0) + 1
        if seen[layer] <= max_passes:
            kept.append(layer)
    return depth, tuple(kept)


@settings(max_examples=400, deadline=None)
@given(valid_programs())
def test_format_parse_round_trip(case):
    depth, program = case
    text = format_program(program)
    assert " " not in text
    assert parse_program(text, depth) == program
    assert parse_program(str(list(program)), depth) == program
    assert parse_program(list(program), depth) == program
    assert format_program(parse_program(text, depth)) == text


def test_program_steps():
    assert program_steps((0, 1, 0, 1, 2)) == ((0, 0), (1, 0), (0, 1), (1, 1), (2, 0))
    assert program_steps(()) == ()
    assert program_steps((3, 3, 3)) == ((3, 0), (3, 1), (3, 2))


def test_describe_program():
    program = parse_program("0-9,8-9,12-29", D)
    assert describe_program(program, D) == {
        "program": "0-9,8-9,12-29",
        "executed_layers": 30,
        "depth": 30,
        "skipped_layers": [10, 11],
        "repeated_layers": [8, 9],
    }
    assert describe_program((), 3)["skipped_layers"] == [0, 1, 2]
    with pytest.raises(ProgramError, match="out of range"):
        describe_program((3,), 3)


# --------------------------------------------------------------------------- PolarForm


def test_polar_form_basics():
    form = form_from_lengths([2, 2, 1], [KEEP, REPEAT, SKIP])
    assert form.depth == 5
    assert form.segments() == ((0, 2), (2, 4), (4, 5))
    assert form.to_program() == (0, 1, 2, 3, 2, 3)
    assert PolarForm([True, False], ["repeat"]) == PolarForm((True, False), (REPEAT,))
    assert hash(form) == hash(form_from_lengths([2, 2, 1], [KEEP, REPEAT, SKIP]))
    assert SegmentOp("keep") is KEEP and KEEP == "keep"


@pytest.mark.parametrize(
    ("boundaries", "ops", "pattern"),
    [
        ((False, True), (KEEP, KEEP), r"boundaries\[0\] must be True"),
        ((), (), "non-empty"),
        ((1, 0), (KEEP,), "bool boundaries"),
        ((True, False, True), (KEEP,), "2 segments but 1 ops"),
        ((True, True), (KEEP, KEEP, KEEP), "2 segments but 3 ops"),
        ((True,) + (False,) * 4, (KEEP,), "segment 1 '0-4' has 5 layers but at most 4"),
        ((True, False), ("twice",), "ops must be 'skip', 'keep' or 'repeat'"),
    ],
)
def test_polar_form_rejects(boundaries, ops, pattern):
    with pytest.raises(ProgramError, match="^polar program form.*" + pattern):
        PolarForm(boundaries, ops)


def test_polar_form_custom_max_segment_len():
    form = PolarForm((True,) + (False,) * 5, (KEEP,), max_segment_len=6)
    assert form.to_program() == tuple(range(6))


# --------------------------------------------------------------------------- canonical form


def test_canonical_full_depth_30():
    form = canonical_polar_form(full_program(D), D)
    assert form is not None
    assert form.ops == (KEEP,) * 8
    assert form.segments() == tuple((s, min(s + 4, D)) for s in range(0, D, 4))


def test_canonical_leading_repeat():
    form = canonical_polar_form(parse_program("0-3,0-3,4-29", D), D)
    assert form is not None
    assert form.segments()[0] == (0, 4)
    assert form.ops[0] is REPEAT
    assert form.ops[1:] == (KEEP,) * 7
    assert len(form.segments()) == 8


def test_canonical_mixed():
    # skip 0-1, keep 2-5, repeat 6-7, skip 8-9
    program = parse_program("2-7,6-7", 10)
    form = canonical_polar_form(program, 10)
    assert form is not None
    assert form.segments() == ((0, 2), (2, 6), (6, 8), (8, 10))
    assert form.ops == (SKIP, KEEP, REPEAT, SKIP)
    # Two adjacent repeats cannot merge: 4-7 repeated would be 4,5,6,7,4,5,6,7.
    form = canonical_polar_form(parse_program("4-5,4-5,6-7,6-7", 8), 8)
    assert form is not None
    assert form.segments() == ((0, 4), (4, 6), (6, 8))
    assert form.ops == (SKIP, REPEAT, REPEAT)


def test_canonical_tie_breaks_by_hand():
    # Depth 6, full: [0,4)+[4,6) beats [0,2)+[2,6) and [0,3)+[3,6) (longest segments first).
    form = canonical_polar_form(full_program(6), 6)
    assert form is not None and form.segments() == ((0, 4), (4, 6))
    # The empty program of depth 9: three skips, lengths (4, 4, 1) rather than e.g. (1, 4, 4).
    form = canonical_polar_form((), 9)
    assert form is not None
    assert form.segments() == ((0, 4), (4, 8), (8, 9))
    assert form.ops == (SKIP,) * 3
    # A layer's op is fixed by its pass count (0 skip, 1 keep, 2 repeat), so all labellings with
    # the fewest segments have the same skip and repeat counts and differ only in their lengths:
    # skip 0-4 and keep 5-9 take two segments each, split (4, 1) rather than (1, 4), (2, 3), ...
    form = canonical_polar_form(parse_program("5-9", 10), 10)
    assert form is not None
    assert form.segments() == ((0, 4), (4, 5), (5, 9), (9, 10))
    assert form.ops == (SKIP, SKIP, KEEP, KEEP)
    labellings = [
        form_from_lengths(lengths, [SKIP, SKIP, KEEP, KEEP])
        for lengths in itertools.product(range(1, 5), repeat=4)
        if lengths[0] + lengths[1] == 5 and lengths[2] + lengths[3] == 5
    ]
    assert len(labellings) == 16
    assert all(f.to_program() == tuple(range(5, 10)) for f in labellings)
    assert min(labellings, key=sort_key) == form
    # Fewest segments wins over longest-first: a 4-layer keep would leave two repeats.
    program = (0, 1, 2, 2, 3, 3)
    form = canonical_polar_form(program, 4)
    assert form is not None
    assert form.segments() == ((0, 2), (2, 3), (3, 4))


@pytest.mark.parametrize(
    ("program", "depth"),
    [
        ((2, 1), 3),  # goes backwards
        ((0, 0, 0), 1),  # a layer three times
        ((0, 2, 0, 2), 3),  # repeats non-contiguous layers
        ((0, 1, 2, 1), 3),  # a repeat must follow its segment immediately
        ((0, 1, 0), 2),  # a repeat must run the whole segment again
        ((1, 0, 1, 0), 2),
        ((0, 1, 2, 3, 4, 0, 1, 2, 3, 4), 5),  # a repeat longer than max_segment_len
        ((3, 4, 3, 4, 5, 0), 6),
    ],
)
def test_canonical_not_expressible(program, depth):
    assert canonical_polar_form(program, depth) is None


def test_canonical_repeat_inside():
    form = canonical_polar_form((0, 1, 2, 1, 2, 3), 4)
    assert form is not None
    assert form.segments() == ((0, 1), (1, 3), (3, 4))
    assert form.ops == (KEEP, REPEAT, KEEP)


def test_canonical_long_repeat_with_larger_segments():
    program = (0, 1, 2, 3, 4, 0, 1, 2, 3, 4)
    form = canonical_polar_form(program, 5, max_segment_len=5)
    assert form is not None
    assert form.ops == (REPEAT,) and form.max_segment_len == 5
    assert form.to_program() == program


def test_canonical_rejects_invalid_layers():
    with pytest.raises(ProgramError, match=r"item 2 '5' is out of range.*depth 5"):
        canonical_polar_form((0, 5), 5)
    with pytest.raises(ProgramError, match=r"item 1 'True'"):
        canonical_polar_form((True,), 5)
    with pytest.raises(ProgramError, match="max_segment_len"):
        canonical_polar_form((0,), 5, max_segment_len=0)


def sort_key(form):
    lengths = [end - start for start, end in form.segments()]
    return (
        len(lengths),
        form.ops.count(SKIP),
        -form.ops.count(REPEAT),
        [-length for length in lengths],
    )


@functools.cache
def all_labellings(depth, max_segment_len=MAX_SEGMENT_LEN):
    """Map every expressible program of ``depth`` layers to its labellings (brute force)."""
    by_program: dict[tuple[int, ...], list[PolarForm]] = {}

    def compositions(remaining):
        if remaining == 0:
            yield ()
            return
        for first in range(1, min(max_segment_len, remaining) + 1):
            for rest in compositions(remaining - first):
                yield (first, *rest)

    for lengths in compositions(depth):
        for ops in itertools.product(SegmentOp, repeat=len(lengths)):
            form = form_from_lengths(lengths, ops, max_segment_len)
            by_program.setdefault(form.to_program(), []).append(form)
    return by_program


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5, 6, 7])
def test_canonical_matches_brute_force(depth):
    for program, forms in all_labellings(depth).items():
        expected = min(forms, key=sort_key)
        assert canonical_polar_form(program, depth) == expected, program
        # The full tie-break key is unique.
        assert sum(sort_key(f) == sort_key(expected) for f in forms) == 1


@settings(max_examples=300, deadline=None)
@given(valid_programs(max_depth=7, max_passes=3))
def test_canonical_none_iff_no_labelling(case):
    depth, program = case
    form = canonical_polar_form(program, depth)
    if program in all_labellings(depth):
        assert form is not None and form.to_program() == program
    else:
        assert form is None


@st.composite
def random_forms(draw, max_depth=40):
    max_len = draw(st.sampled_from([MAX_SEGMENT_LEN, MAX_SEGMENT_LEN, 1, 2, 3, 6]))
    depth = draw(st.integers(1, max_depth))
    lengths = []
    while sum(lengths) < depth:
        lengths.append(draw(st.integers(1, min(max_len, depth - sum(lengths)))))
    ops = draw(st.lists(st.sampled_from(list(SegmentOp)), min_size=len(lengths)))
    return form_from_lengths(lengths, ops[: len(lengths)], max_len)


@settings(max_examples=500, deadline=None)
@given(random_forms())
def test_canonical_of_random_form(form):
    program = form.to_program()
    depth, max_len = form.depth, form.max_segment_len
    assert validate_program(program, depth) == program
    canonical = canonical_polar_form(program, depth, max_len)
    assert canonical is not None
    assert canonical.to_program() == program
    assert len(canonical.segments()) <= len(form.segments())
    # Ops are fixed per layer, so the fewest segments also means the fewest of each kind.
    assert canonical.ops.count(SKIP) <= form.ops.count(SKIP)
    assert canonical.ops.count(REPEAT) <= form.ops.count(REPEAT)
    assert canonical_polar_form(canonical.to_program(), depth, max_len) == canonical
    assert parse_program(format_program(program), depth) == program


@settings(max_examples=300, deadline=None)
@given(valid_programs(max_depth=30, max_passes=3))
def test_canonical_of_random_program_is_consistent(case):
    depth, program = case
    form = canonical_polar_form(program, depth)
    if form is not None:
        assert form.to_program() == program
        assert canonical_polar_form(form.to_program(), depth) == form
        counts = [program.count(layer) for layer in range(depth)]
        for (start, end), op in zip(form.segments(), form.ops, strict=True):
            expected = {0: SKIP, 1: KEEP, 2: REPEAT}[counts[start]]
            assert op is expected
            assert all(counts[layer] == counts[start] for layer in range(start, end))


def test_canonical_speed():
    import time

    programs = [parse_program(spec, D) for spec in ["full", "0-3,0-3,4-29", "", "0-9,8-9,10-29"]]
    start = time.perf_counter()
    for _ in range(500):
        for program in programs:
            canonical_polar_form(program, D)
    per_call = (time.perf_counter() - start) / 2000
    assert per_call < 1e-3, per_call
