"""Layer programs: parsing, validation, formatting and the canonical PoLar form.

A *program* is the sequence of decoder-layer indices a request runs, in order, e.g.
``(0, 1, 2, 3, 2, 3, 4)``. For a model of depth ``D`` every index is in ``0..D-1`` and appears at
most ``max_passes`` times (default 2), so a program has ``0..max_passes*D`` items.

Text form: comma-separated items, each a layer ``i`` or an inclusive range ``a-b`` (``a <= b``);
whitespace is ignored anywhere. ``"0-9,8-9,10-29"`` runs layers 0..9, then 8 and 9 again, then
10..29. ``"full"`` (any case) is ``0..D-1``; ``""`` is the empty program. A JSON list of ints
(``"[0, 1, 2]"``) or a Python list/tuple of ints is accepted wherever text is.

Every error is a :class:`ProgramError` (a ``ValueError``) whose message starts with
``"polar program"``, names the offending item (quoted, with its 1-based position) and the model
depth.

The *PoLar form* of a program (:class:`PolarForm`) splits the layer axis into contiguous segments
of at most :data:`MAX_SEGMENT_LEN` layers and labels each one skip, keep or repeat;
:func:`canonical_polar_form` finds the unique canonical labelling of a program, if any.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

Program = tuple[int, ...]
"""A layer program: the decoder-layer indices a request runs, in order."""

Step = tuple[int, int]
"""A program step: ``(layer, pass_index)`` (see :func:`program_steps`)."""

FULL = "full"
"""Text spec for the full program ``0..D-1``."""

MAX_SEGMENT_LEN = 4
"""Default maximum number of layers in one :class:`PolarForm` segment."""

_ITEM_RE = re.compile(r"([0-9]+)(?:-([0-9]+))?", re.ASCII)
_QUOTE_MAX = 40


class ProgramError(ValueError):
    """An invalid layer program; the message starts with ``"polar program"``."""


def _quote(text: str) -> str:
    if len(text) > _QUOTE_MAX:
        text = text[: _QUOTE_MAX - 3] + "..."
    return f"'{text}'"


def _check_positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ProgramError(f"polar program {name} must be an int >= 1, got {value!r}")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_layers(
    layers: Sequence[int],
    origins: Sequence[tuple[int, str]],
    depth: int,
    max_passes: int | None,
) -> Program:
    """Check range and pass counts; ``origins[k]`` is (item position, item text) of layer k."""
    counts: dict[int, int] = {}
    for layer, (pos, text) in zip(layers, origins, strict=True):
        if not 0 <= layer < depth:
            raise ProgramError(
                f"polar program item {pos} {_quote(text)} is out of range for a model of "
                f"depth {depth} (valid layers 0..{depth - 1})"
            )
        count = counts.get(layer, 0) + 1
        counts[layer] = count
        if max_passes is not None and count > max_passes:
            raise ProgramError(
                f"polar program item {pos} {_quote(text)}: layer {layer} appears {count} times "
                f"but max_passes is {max_passes} (model depth {depth})"
            )
    return tuple(layers)


def _validate_sequence(
    program: object, depth: int, max_passes: int | None, what: str = "program"
) -> Program:
    if isinstance(program, (str, bytes, bytearray)) or not isinstance(program, Sequence):
        raise ProgramError(
            f"polar program {what} must be a list or tuple of ints, got "
            f"{type(program).__name__} (model depth {depth})"
        )
    origins = []
    for pos, item in enumerate(program, start=1):
        if not _is_int(item):
            text = item if isinstance(item, str) else repr(item)
            raise ProgramError(
                f"polar program item {pos} {_quote(text)} is not an int layer index "
                f"(got {type(item).__name__}, model depth {depth})"
            )
        origins.append((pos, str(item)))
    return _check_layers(list(program), origins, depth, max_passes)


def validate_program(program: Sequence[int], depth: int, max_passes: int = 2) -> Program:
    """Validate a sequence of layer indices for a model of ``depth`` layers; return it as a tuple.

    Every item must be an ``int`` (not ``bool``) in ``0..depth-1`` and no layer may appear more
    than ``max_passes`` times. Raises :class:`ProgramError` otherwise.
    """
    _check_positive("depth", depth)
    _check_positive("max_passes", max_passes)
    return _validate_sequence(program, depth, max_passes)


def _parse_json(text: str, depth: int, max_passes: int) -> Program:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise ProgramError(
            f"polar program {_quote(text)} is not valid JSON ({exc}) (model depth {depth})"
        ) from None
    if not isinstance(value, list):
        raise ProgramError(
            f"polar program JSON {_quote(text)} is not a list of ints (model depth {depth})"
        )
    origins = []
    for pos, item in enumerate(value, start=1):
        if not _is_int(item):
            raise ProgramError(
                f"polar program item {pos} {_quote(json.dumps(item))} of JSON list is not an int "
                f"layer index (model depth {depth})"
            )
        origins.append((pos, str(item)))
    return _check_layers(value, origins, depth, max_passes)


def _parse_text(text: str, depth: int, max_passes: int) -> Program:
    compact = "".join(text.split())
    if compact.lower() == FULL:
        return full_program(depth)
    if compact.startswith("["):
        return _parse_json(text.strip(), depth, max_passes)
    if not compact:
        return ()
    layers: list[int] = []
    origins: list[tuple[int, str]] = []
    for pos, item in enumerate(compact.split(","), start=1):
        if not item:
            raise ProgramError(
                f"polar program item {pos} '' is empty (model depth {depth}); "
                "expected a layer like '7' or a range like '4-9'"
            )
        match = _ITEM_RE.fullmatch(item)
        if match is None:
            raise ProgramError(
                f"polar program item {pos} {_quote(item)} is malformed (model depth {depth}); "
                "expected a layer like '7' or a range like '4-9'"
            )
        first_text, last_text = match.group(1), match.group(2)
        try:
            first = int(first_text)
            last = first if last_text is None else int(last_text)
        except ValueError:  # more digits than int() accepts: certainly out of range
            first = last = depth
        if first > last:
            raise ProgramError(
                f"polar program item {pos} {_quote(item)} is a bad range: start {first} > "
                f"end {last} (model depth {depth})"
            )
        if last >= depth:  # check before expanding, so '0-999999999' stays cheap
            _check_layers([last], [(pos, item)], depth, None)
        layers.extend(range(first, last + 1))
        origins.extend([(pos, item)] * (last - first + 1))
    return _check_layers(layers, origins, depth, max_passes)


def parse_program(spec: str | Sequence[int], depth: int, max_passes: int = 2) -> Program:
    """Parse and validate a program spec for a model of ``depth`` layers.

    ``spec`` is text (``"0-9,8-9,10-29"``, ``"full"``, ``""``, or a JSON list ``"[0, 1]"``) or a
    list/tuple of ints. Raises :class:`ProgramError` on any invalid input, including
    ``depth < 1`` or ``max_passes < 1``.
    """
    _check_positive("depth", depth)
    _check_positive("max_passes", max_passes)
    if isinstance(spec, str):
        return _parse_text(spec, depth, max_passes)
    return _validate_sequence(spec, depth, max_passes, what="spec")


def format_program(program: Sequence[int]) -> str:
    """Return the compact canonical text of ``program``.

    Maximal runs of consecutive ascending layers (``k, k+1, ...``) of two or more layers are
    written ``"a-b"``; a lone layer is written ``"a"``. Items are joined by ``","`` without
    spaces and the empty program is ``""``. ``parse_program(format_program(p), D) == p`` for
    every valid ``p``.
    """
    layers = tuple(program)
    for pos, item in enumerate(layers, start=1):
        if not _is_int(item) or item < 0:
            raise ProgramError(
                f"polar program item {pos} {_quote(repr(item))} is not a non-negative int layer "
                "index"
            )
    items: list[str] = []
    k = 0
    while k < len(layers):
        end = k
        while end + 1 < len(layers) and layers[end + 1] == layers[end] + 1:
            end += 1
        items.append(str(layers[k]) if end == k else f"{layers[k]}-{layers[end]}")
        k = end + 1
    return ",".join(items)


def full_program(depth: int) -> Program:
    """Return the full program ``(0, 1, ..., depth-1)``."""
    return tuple(range(_check_positive("depth", depth)))


def executed_layers(program: Sequence[int]) -> int:
    """Return the number of layer executions of ``program`` (its length)."""
    return len(program)


def program_steps(program: Sequence[int]) -> tuple[Step, ...]:
    """Return the ``(layer, pass_index)`` steps of ``program``.

    ``pass_index`` (0-based) counts the earlier occurrences of the layer in the program, so
    every step of a program is distinct; layers must be non-negative (``ValueError``).

    >>> program_steps((0, 1, 0, 1, 2))
    ((0, 0), (1, 0), (0, 1), (1, 1), (2, 0))
    """
    seen: dict[int, int] = {}
    steps = []
    for layer in program:
        layer = int(layer)
        if layer < 0:
            raise ValueError(f"layer indices must be non-negative, got {layer} in {program!r}")
        count = seen.get(layer, 0)
        steps.append((layer, count))
        seen[layer] = count + 1
    return tuple(steps)


def describe_program(program: Sequence[int], depth: int) -> dict[str, object]:
    """Summarise ``program`` for a model of ``depth`` layers.

    Returns ``{"program": text, "executed_layers": n, "depth": depth, "skipped_layers": [...],
    "repeated_layers": [...]}``; skipped layers are never run, repeated layers run more than once
    (both sorted). Any number of passes per layer is accepted here.
    """
    _check_positive("depth", depth)
    layers = _validate_sequence(program, depth, None)
    counts = [0] * depth
    for layer in layers:
        counts[layer] += 1
    return {
        "program": format_program(layers),
        "executed_layers": len(layers),
        "depth": depth,
        "skipped_layers": [layer for layer, c in enumerate(counts) if c == 0],
        "repeated_layers": [layer for layer, c in enumerate(counts) if c > 1],
    }


class SegmentOp(str, Enum):
    """What a :class:`PolarForm` segment does with its layers."""

    SKIP = "skip"  # run none of them
    KEEP = "keep"  # run them once, in order
    REPEAT = "repeat"  # run them in order, then all of them again (4, 5, 4, 5)

    @property
    def passes(self) -> int:
        """How many times the op runs each layer of its segment (0, 1 or 2)."""
        return _OP_PASSES[self]

    @classmethod
    def of_passes(cls, passes: int) -> SegmentOp:
        """The op that runs each layer of its segment ``passes`` times."""
        return _PASSES_OP[passes]


_OP_PASSES = {SegmentOp.SKIP: 0, SegmentOp.KEEP: 1, SegmentOp.REPEAT: 2}
_PASSES_OP = {passes: op for op, passes in _OP_PASSES.items()}


@dataclass(frozen=True)
class PolarForm:
    """A segment labelling of the layer axis.

    ``boundaries[i]`` is True when layer ``i`` starts a segment (``boundaries[0]`` must be True);
    ``ops`` has one :class:`SegmentOp` per segment, in layer order. Segments are at most
    ``max_segment_len`` layers long. Lists and op strings are normalised to tuples and
    :class:`SegmentOp`; anything invalid raises :class:`ProgramError`.
    """

    boundaries: tuple[bool, ...]
    ops: tuple[SegmentOp, ...]
    max_segment_len: int = MAX_SEGMENT_LEN

    def __post_init__(self) -> None:
        boundaries = tuple(self.boundaries)
        if not boundaries or any(not isinstance(b, bool) for b in boundaries):
            raise ProgramError(
                f"polar program form needs a non-empty tuple of bool boundaries, got {boundaries!r}"
            )
        depth = len(boundaries)
        if not boundaries[0]:
            raise ProgramError(
                f"polar program form boundaries[0] must be True (model depth {depth})"
            )
        _check_positive("max_segment_len", self.max_segment_len)
        try:
            ops = tuple(SegmentOp(op) for op in self.ops)
        except (ValueError, TypeError):
            raise ProgramError(
                f"polar program form ops must be 'skip', 'keep' or 'repeat', got {self.ops!r} "
                f"(model depth {depth})"
            ) from None
        object.__setattr__(self, "boundaries", boundaries)
        object.__setattr__(self, "ops", ops)
        segments = self.segments()
        if len(ops) != len(segments):
            raise ProgramError(
                f"polar program form has {len(segments)} segments but {len(ops)} ops "
                f"(model depth {depth})"
            )
        for number, (start, end) in enumerate(segments, start=1):
            if end - start > self.max_segment_len:
                raise ProgramError(
                    f"polar program form segment {number} '{start}-{end - 1}' has {end - start} "
                    f"layers but at most {self.max_segment_len} are allowed (model depth {depth})"
                )

    @property
    def depth(self) -> int:
        """Model depth: the number of layers covered."""
        return len(self.boundaries)

    def segments(self) -> tuple[tuple[int, int], ...]:
        """Return ``(start, end_exclusive)`` of each segment, in layer order."""
        starts = [i for i, b in enumerate(self.boundaries) if b]
        return tuple(zip(starts, [*starts[1:], len(self.boundaries)], strict=True))

    def to_program(self) -> Program:
        """Expand to a program: skip runs nothing, keep runs the segment, repeat runs it twice."""
        layers: list[int] = []
        for (start, end), op in zip(self.segments(), self.ops, strict=True):
            layers.extend(list(range(start, end)) * op.passes)
        return tuple(layers)


def canonical_polar_form(
    program: Sequence[int], depth: int, max_segment_len: int = MAX_SEGMENT_LEN
) -> PolarForm | None:
    """Return the canonical :class:`PolarForm` whose ``to_program()`` equals ``program``.

    Returns None when no labelling expands to ``program`` (it goes backwards other than by
    repeating the segment just run, runs a layer three or more times, ...). Among labellings that
    expand to ``program`` the canonical one has the fewest segments, then the fewest skip
    segments, then the most repeat segments, then the lexicographically largest tuple of segment
    lengths (longest segments first). Raises :class:`ProgramError` on non-int or out-of-range
    layers.

    Dynamic program over layer positions: all items of layers ``< s`` precede those of layers
    ``>= s`` in an expressible program, so the program position where a segment starting at
    layer ``s`` begins is the number of items ``< s``; a backward pass over ``s`` keeps the best
    labelling of the suffix ``s..depth-1``.
    """
    _check_positive("depth", depth)
    _check_positive("max_segment_len", max_segment_len)
    layers = _validate_sequence(program, depth, None)
    counts = [0] * depth
    for layer in layers:
        counts[layer] += 1
    before = [0] * (depth + 1)  # before[s]: number of items with layer < s
    for s in range(depth):
        before[s + 1] = before[s] + counts[s]

    # best[s]: (segments, skips, -repeats) of the best labelling of layers s..depth-1.
    best: list[tuple[int, int, int] | None] = [None] * (depth + 1)
    best[depth] = (0, 0, 0)
    length = [0] * (depth + 1)
    for s in range(depth - 1, -1, -1):
        passes = counts[s]
        if passes > 2:
            continue
        end_max = s + 1  # segments hold layers with equal pass counts
        while end_max < min(s + max_segment_len, depth) and counts[end_max] == passes:
            end_max += 1
        pos = before[s]
        for end in range(end_max, s, -1):  # longest first: ties keep the longest segment
            tail = best[end]
            if tail is None:
                continue
            if passes:
                run = tuple(range(s, end))
                width = end - s
                if layers[pos : pos + width] != run:
                    continue
                if passes == 2 and layers[pos + width : pos + 2 * width] != run:
                    continue
            cost = (tail[0] + 1, tail[1] + (passes == 0), tail[2] - (passes == 2))
            current = best[s]
            if current is None or cost < current:
                best[s] = cost
                length[s] = end - s
    if best[0] is None:
        return None
    boundaries = [False] * depth
    ops = []
    s = 0
    while s < depth:
        boundaries[s] = True
        ops.append(SegmentOp.of_passes(counts[s]))
        s += length[s]
    return PolarForm(tuple(boundaries), tuple(ops), max_segment_len)
