"""A request's program is size-checked before it is parsed: oversized texts and lists are
refused at once, with a message giving both sizes, and valid programs of any spelling within the
limits still parse."""

from __future__ import annotations

import json
import re
import time

import pytest

from polar_vllm.engine.config import PolarConfig
from polar_vllm.engine.request_programs import max_program_chars, resolve_request_program
from polar_vllm.program import ProgramError

DEPTH = 30


@pytest.fixture(scope="module")
def config() -> PolarConfig:
    return PolarConfig.from_dict({}, DEPTH)


def _resolve(program: object, config: PolarConfig):
    return resolve_request_program({"polar_program": program}, config)


@pytest.mark.parametrize(
    ("program", "named"),
    [
        ("0," * 500_000, "text is 1000000 characters, over the limit of 4096"),
        (json.dumps([0] * 1_000_000), "over the limit of 4096 (a program runs at most 60 layers"),
        ([0] * 1_000_000, "has 1000000 items, but a program runs at most 60 layers"),
        (list(range(30)) * 2 + [5], "has 61 items, but a program runs at most 60 layers"),
    ],
)
def test_oversized_program_is_refused_before_parsing(config, program, named):
    start = time.perf_counter()
    with pytest.raises(ProgramError, match=re.escape(named)):
        _resolve(program, config)
    assert time.perf_counter() - start < 0.5


def test_programs_within_the_limits_still_parse(config):
    assert max_program_chars(config) == 4096
    longest = list(range(30)) * 2
    assert _resolve(longest, config).text == "0-29,0-29"
    spelled_out = " , ".join(str(layer) for layer in longest)
    assert _resolve(spelled_out.ljust(4096), config).text == "0-29,0-29"
    with pytest.raises(ProgramError, match="4097 characters"):
        _resolve(spelled_out.ljust(4097), config)
    # Longer than 60 layers once expanded, but a short text: parsed, and the item named.
    with pytest.raises(ProgramError, match="layer 5 appears 3 times"):
        _resolve("0-29,0-29,5", config)
