"""Which program a request runs, checked before it enters the engine.

A request's own program (``extra_args["polar_program"]``) wins; otherwise the predictor's
program, if a predictor is loaded; otherwise the configured default (the full program). The
chosen program is validated against the served model, rewritten in canonical text form (so
the engine parses one spelling per program), and turned into a prefix-cache salt: KV blocks
are only valid for the program that wrote them.

A request's program is untrusted input, so its size is checked before it is parsed
(:func:`check_program_size`): a program of a depth-``D`` model runs at most ``max_passes * D``
layers, so a longer list, or a text far longer than any such program needs, is refused at once.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from polar_vllm.engine.config import PROGRAM_ARG, QUESTION_ARG, PolarConfig
from polar_vllm.engine.config_loading import check_keys
from polar_vllm.program import Program, ProgramError, format_program, parse_program

__all__ = [
    "KNOWN_REQUEST_KEYS",
    "PolarBatch",
    "ResolvedProgram",
    "check_program_size",
    "max_program_chars",
    "program_cache_salt",
    "request_program",
    "resolve_request_program",
]

KNOWN_REQUEST_KEYS = frozenset({PROGRAM_ARG, QUESTION_ARG})
"""The ``polar_*`` keys a request's ``extra_args`` may carry."""

ProgramSource = Literal["request", "predictor", "default"]

_CHARS_PER_ITEM = 16
"""Room per layer in an accepted program text: the digits, a separator and spare whitespace."""
_MIN_PROGRAM_CHARS = 4096


def max_program_chars(config: PolarConfig) -> int:
    """The longest program text a request may carry: every layer the longest program runs,
    written out one by one with generous whitespace."""
    return max(_MIN_PROGRAM_CHARS, _CHARS_PER_ITEM * config.max_passes * config.depth)


def check_program_size(spec: str | list[Any] | tuple[Any, ...], config: PolarConfig) -> None:
    """Refuse a program spec too large to be valid, before any parsing.

    Raises:
        ProgramError: a text longer than :func:`max_program_chars`, or a list with more than
            ``max_passes * depth`` items; the message gives both sizes.
    """
    max_layers = config.max_passes * config.depth
    if isinstance(spec, str):
        limit = max_program_chars(config)
        if len(spec) > limit:
            raise ProgramError(
                f"polar program text is {len(spec)} characters, over the limit of {limit} "
                f"(a program runs at most {max_layers} layers: model depth {config.depth}, "
                f"max_passes {config.max_passes})"
            )
    elif len(spec) > max_layers:
        raise ProgramError(
            f"polar program has {len(spec)} items, but a program runs at most {max_layers} "
            f"layers (model depth {config.depth}, max_passes {config.max_passes})"
        )


@dataclass(frozen=True)
class ResolvedProgram:
    """The program a request will run, and where it came from."""

    program: Program
    source: ProgramSource

    @property
    def text(self) -> str:
        """Canonical text form of the program."""
        return format_program(self.program)


def resolve_request_program(
    extra_args: Mapping[str, Any] | None,
    config: PolarConfig,
    predicted: Program | None = None,
) -> ResolvedProgram:
    """The checked program of a request with ``extra_args``.

    Raises:
        ProgramError: the request's program is too large (:func:`check_program_size`),
            malformed, does not fit the model, uses a layer more often than the server's KV
            slots allow, ``extra_args`` has an unknown ``polar_*`` key or a question that is
            not text. The message names
            the problem.
    """
    extra_args = extra_args or {}
    polar_keys = [key for key in extra_args if key.startswith("polar")]
    check_keys(polar_keys, KNOWN_REQUEST_KEYS, "polar request", ProgramError)
    question = extra_args.get(QUESTION_ARG)
    if question is not None and not isinstance(question, str):
        raise ProgramError(f"{QUESTION_ARG} must be text, got {type(question).__name__}")
    spec = extra_args.get(PROGRAM_ARG)
    if spec is not None:
        if not isinstance(spec, (str, list, tuple)):
            raise ProgramError(
                f"polar program must be text or a list of layer indices, got "
                f"{type(spec).__name__} (depth {config.depth})"
            )
        check_program_size(spec, config)
        program, source = parse_program(spec, config.depth, config.max_passes), "request"
    elif predicted is not None:
        program, source = tuple(predicted), "predictor"
    else:
        program, source = config.default_program, "default"
    config.check_program(program)
    return ResolvedProgram(program, source)


def program_cache_salt(program: Program, config: PolarConfig, salt: str | None) -> str | None:
    """The prefix-cache salt of a request running ``program`` (its own salt was ``salt``).

    The full program computes exactly what stock vLLM computes, so its salt is left as it is;
    any other program adds a digest of its canonical text."""
    if program == config.full:
        return salt
    digest = hashlib.sha256(format_program(program).encode()).hexdigest()[:24]
    return f"{salt}|polar:{digest}" if salt else f"polar:{digest}"


@functools.lru_cache(maxsize=4096)
def _parse_cached(text: str, depth: int, max_passes: int) -> Program:
    return parse_program(text, depth, max_passes)


def request_program(extra_args: Mapping[str, Any] | None, config: PolarConfig) -> Program:
    """The program a request runs inside the engine: the one it carries (already checked and
    written in canonical text by :func:`resolve_request_program` in the front end), else the
    default."""
    text = (extra_args or {}).get(PROGRAM_ARG)
    if text is None:
        return config.default_program
    return _parse_cached(text, config.depth, config.max_passes)


@dataclass(frozen=True)
class PolarBatch:
    """The requests of one forward, in batch order: their programs and scheduled tokens."""

    programs: Sequence[Program]
    query_lens: Sequence[int]
