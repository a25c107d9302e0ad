"""Which program a request runs, checked before it enters the engine.

A request's own program (``extra_args["polar_program"]``) wins; otherwise the predictor's
program, if a predictor is loaded; otherwise the configured default (the full program). The
chosen program is validated against the served model, rewritten in canonical text form (so
the engine parses one spelling per program), and turned into a prefix-cache salt: KV blocks
are only valid for the program that wrote them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from polar_vllm.config import PROGRAM_ARG, PolarConfig
from polar_vllm.program import Program, ProgramError, format_program, parse_program

__all__ = [
    "KNOWN_REQUEST_KEYS",
    "ResolvedProgram",
    "program_cache_salt",
    "resolve_request_program",
]

KNOWN_REQUEST_KEYS = frozenset({PROGRAM_ARG})
"""The ``polar_*`` keys a request's ``extra_args`` may carry."""

ProgramSource = Literal["request", "predictor", "default"]


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
        ProgramError: the request's program is malformed, does not fit the model, uses a layer
            more often than the server's KV slots allow, or ``extra_args`` has an unknown
            ``polar_*`` key. The message names the problem.
    """
    extra_args = extra_args or {}
    unknown = sorted(
        key for key in extra_args if key.startswith("polar") and key not in KNOWN_REQUEST_KEYS
    )
    if unknown:
        raise ProgramError(
            f"polar request has unknown key(s) {unknown}; known: {sorted(KNOWN_REQUEST_KEYS)}"
        )
    spec = extra_args.get(PROGRAM_ARG)
    if spec is not None:
        if not isinstance(spec, (str, list, tuple)):
            raise ProgramError(
                f"polar program must be text or a list of layer indices, got "
                f"{type(spec).__name__} (depth {config.depth})"
            )
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
