"""The program language, bottom of the import order (standard library only).

:mod:`.language` defines programs (parsing, validation, formatting, steps, the canonical PoLar
form); its names are re-exported here, so ``from polar_vllm.program import Program`` is the one
way in. :mod:`.families` draws families of programs for benchmarks and baselines.
"""

from polar_vllm.program.language import (
    FULL,
    MAX_SEGMENT_LEN,
    PolarForm,
    Program,
    ProgramError,
    SegmentOp,
    Step,
    canonical_polar_form,
    describe_program,
    executed_layers,
    format_program,
    full_program,
    parse_program,
    program_steps,
    validate_program,
)

__all__ = [
    "FULL",
    "MAX_SEGMENT_LEN",
    "PolarForm",
    "Program",
    "ProgramError",
    "SegmentOp",
    "Step",
    "canonical_polar_form",
    "describe_program",
    "executed_layers",
    "format_program",
    "full_program",
    "parse_program",
    "program_steps",
    "validate_program",
]
