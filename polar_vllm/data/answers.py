"""Numeric answers: extraction from model replies and data set fields, normalization, matching.

Numbers are compared exactly, as :class:`fractions.Fraction`; there is no float tolerance.

A *number* here is an optional sign, an optional currency symbol (``$ £ € ¥``, before or after
the sign), then an integer (``1234`` or with well-formed thousands groups ``1,234``), a decimal
(``2.50``, ``.5``) or a fraction of integers (``3/4``, LaTeX ``\\frac{3}{4}``), then an optional
percent sign or word. The percent sign is dropped, not divided out: ``"25%"`` is 25, because
data sets store "what percent ..." answers as the number of percent. Number words (``"five"``)
and scale words (``"5 million"``) are not understood.

:func:`extract_answer` picks *one* number from free text, by these rules, first that applies:

1. GSM8K marker: the first number after the last ``####``.
2. LaTeX box: the content of the last ``\\boxed{...}`` (or ``\\fbox{...}``); it must be a single
   number, optionally followed by unit words (``\\boxed{72 \\text{ apples}}``), else the
   answer is ``None`` (the boxed answer is not numeric).
3. Answer cue: the first number after the first ``"answer is"``, ``"answer:"`` or
   ``"answer ="`` (any case; ``"The final answer is: $5.00."`` gives ``"5"``).
4. Otherwise the first line of the reply that contains a number: the first number after the
   last ``=`` in that line if it has one (``"3 * 4 = 12 apples"`` gives ``"12"``), else the
   first number in the line. With the direct-answer prompts of :mod:`polar_vllm.data.prompts`
   the reply should start with the answer, so the first number *is* the answer; anything after
   it (a model rambling on to invent another question) is ignored. A hedge such as
   ``"5 or 6"`` therefore extracts ``"5"``.

:func:`answers_match` compares two *answers*, not replies: each side must be a single number
(:func:`normalize_number`: decorations such as whitespace, currency, commas, ``%``, a trailing
period, ``\\boxed{}`` are allowed, words and second numbers are not), so ``"5 or 6"`` and
``"72 apples"`` match nothing. Pass model output through :func:`extract_answer` first.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = [
    "answers_match",
    "canonical_number",
    "extract_answer",
    "normalize_number",
]

_NUMBER_BODY = (
    r"(?<![\w.,/])"  # not glued to a word, a decimal point, a thousands group or a fraction
    r"(?P<sign>[-+])?"
    r"(?P<cur>[$£€¥]\s?)?"
    r"(?P<sign2>[-+])?"
    r"(?P<num>"
    r"\d+/\d+(?![\d/])"  # fraction of integers
    r"|(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"  # integer (thousands groups) or decimal
    r"|\.\d+"  # bare decimal
    r")"
    r"(?P<pct>\s?(?:%|percent\b))?"
)
_NUMBER_RE = re.compile(_NUMBER_BODY)
_NUMBER_FULL_RE = re.compile(r"\s*" + _NUMBER_BODY + r"\s*\$?\s*\.?\s*")
_UNIT_TAIL_RE = re.compile(r"[\s$.,;:!]*(?:[A-Za-z]{2,}[\s.,;:!]*)*")
_CUE_RE = re.compile(r"\banswer\b[\s*]*(?:is\b|:|=)", re.IGNORECASE)

_LATEX_SUBS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\\[dt]?frac\s*\{\s*([-+]?)\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}"), r"\1\2/\3"),
    (re.compile(r"\\[dt]?frac(\d)(\d)"), r"\1/\2"),
    (re.compile(r"(?<=\d)\{,\}(?=\d)"), ","),
    (re.compile(r"(?<=\d)\\[,!]\s?(?=\d)"), ""),
    (re.compile(r"\\%"), "%"),
    (re.compile(r"\\\$"), "$"),
    (re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}"), r" \1 "),
    (re.compile(r"\\(?:left|right)\b"), ""),
    (re.compile(r"\\[()\[\]]"), " "),
    (re.compile(r"\^\s*\{?\\circ\}?|°"), ""),
    (re.compile("[\u2212\u2012\u2013]"), "-"),  # unicode minus and dashes
)
_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")


def _clean(text: str) -> str:
    """Rewrite the LaTeX and unicode forms of numbers into plain text."""
    for pattern, repl in _LATEX_SUBS:
        text = pattern.sub(repl, text)
    return text


def _brace_content(text: str, start: int) -> tuple[str, int] | None:
    """Content from ``start`` up to the brace closing an already open one, and its end index."""
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i], i + 1
    return None


def _last_boxed(text: str) -> str | None:
    """Content of the last closed ``\\boxed{...}`` in ``text`` (braces matched), or ``None``."""
    for match in reversed(list(_BOX_RE.finditer(text))):
        found = _brace_content(text, match.end())
        if found is not None:
            return found[0]
    return None


def _unwrap_box(text: str) -> str:
    """``text`` without a ``\\boxed{...}`` wrapping all of it (math ``$`` delimiters allowed)."""
    inner = text.strip().strip("$").strip()
    match = _BOX_RE.match(inner)
    if match is None:
        return text
    found = _brace_content(inner, match.end())
    if found is None or inner[found[1] :].strip(" .$"):
        return text
    return found[0]


def _to_fraction(match: re.Match[str]) -> Fraction | None:
    """Value of a :data:`_NUMBER_RE` match; ``None`` for a zero denominator."""
    num = match.group("num")
    if "/" in num:
        top, bottom = num.split("/")
        if int(bottom) == 0:
            return None
        value = Fraction(int(top), int(bottom))
    else:
        value = Fraction(num.replace(",", ""))
    if "-" in (match.group("sign"), match.group("sign2")):
        value = -value
    return value


def _first_number(text: str) -> Fraction | None:
    """The first number in ``text``, or ``None``."""
    for match in _NUMBER_RE.finditer(text):
        value = _to_fraction(match)
        if value is not None:
            return value
    return None


def _boxed_number(content: str) -> Fraction | None:
    """A boxed answer's value: a single number, optionally followed by unit words."""
    match = _NUMBER_RE.search(content)
    if match is None or content[: match.start()].strip(" $"):
        return None
    if not _UNIT_TAIL_RE.fullmatch(content[match.end() :]):
        return None
    return _to_fraction(match)


def canonical_number(value: Fraction | int) -> str:
    """The canonical string of a number: ``"42"``, ``"-3"``, ``"2.5"``, or ``"1/3"``.

    Integers have no decimal point, values with a finite decimal expansion are written as exact
    decimals without trailing zeros, and the rest as a reduced fraction ``"p/q"``.
    """
    value = Fraction(value)
    num, den = value.numerator, value.denominator
    if den == 1:
        return str(num)
    rest, twos, fives = den, 0, 0
    while rest % 2 == 0:
        rest //= 2
        twos += 1
    while rest % 5 == 0:
        rest //= 5
        fives += 1
    if rest != 1:
        return f"{num}/{den}"
    places = max(twos, fives)
    digits = str(abs(num) * 10**places // den).rjust(places + 1, "0")
    sign = "-" if num < 0 else ""
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


def normalize_number(s: str | int | float) -> Fraction | None:
    """The exact value of ``s`` if it is a single number, else ``None``.

    Allowed around the number: whitespace, a sign, a currency symbol, thousands commas in
    well-formed groups, a percent sign (dropped: ``"25%"`` is 25), a trailing period, a
    closing ``$``, LaTeX ``\\frac{}{}``/``\\boxed{}``/``\\$``/``\\%``. Anything else (words,
    a second number, ``"12,34"``, a zero denominator) gives ``None``. ``int`` and ``float``
    inputs are converted exactly from their shortest ``repr`` (``0.1`` is 1/10).
    """
    if isinstance(s, bool):
        return None
    if isinstance(s, int):
        return Fraction(s)
    if isinstance(s, float):
        return Fraction(repr(s)) if s == s and abs(s) != float("inf") else None
    if not isinstance(s, str):
        return None
    text = _unwrap_box(_clean(s))
    match = _NUMBER_FULL_RE.fullmatch(text)
    return None if match is None else _to_fraction(match)


def extract_answer(text: str | None) -> str | None:
    """The final numeric answer in ``text`` as a canonical string, or ``None``.

    Works on model replies and on data set answer fields (GSM8K ``"... #### 72"``, MATH and
    DART-Math ``\\boxed{3/4}`` or ``"The answer is: 72"``, bare numbers). The rules, in order:
    ``####`` marker, last ``\\boxed{}``, first ``"answer is"``/``"answer:"`` cue, else the first
    line containing a number (after its last ``=`` if any); see the module docstring.
    """
    if not text:
        return None
    text = _clean(text)
    if "####" in text:
        value = _first_number(text.rsplit("####", 1)[1])
        return None if value is None else canonical_number(value)
    boxed = _last_boxed(text)
    if boxed is not None:
        value = _boxed_number(boxed)
        return None if value is None else canonical_number(value)
    cue = _CUE_RE.search(text)
    if cue is not None:
        value = _first_number(text[cue.end() :])
        if value is not None:
            return canonical_number(value)
    for line in text.splitlines():
        value = _first_number(line)
        if value is None:
            continue
        if "=" in line:
            after = _first_number(line.rsplit("=", 1)[1])
            if after is not None:
                value = after
        return canonical_number(value)
    return None


def answers_match(predicted: str | None, reference: str) -> bool:
    """Whether ``predicted`` and ``reference`` are the same number, compared exactly.

    Equivalent forms match (``"1,000"``/``"1000"``, ``"2.50"``/``"2.5"``, ``"0.5"``/``"1/2"``,
    ``"$5"``/``"5.0"``, ``"25%"``/``"25"``). ``None``, non-numbers, and anything that is not a
    single number (``"5 or 6"``, ``"72 apples"``) never match; run model replies through
    :func:`extract_answer` first. A reference that is not a number matches nothing.
    """
    if predicted is None:
        return False
    left = normalize_number(predicted)
    if left is None:
        return False
    right = normalize_number(reference)
    return right is not None and left == right
