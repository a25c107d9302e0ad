"""Predictor directories: the loaded :class:`Predictor`, loading with checks, saving, random init.

Layout: ``config.yaml`` (:class:`~polar_vllm.predictor.predictor_config.PredictorConfig`),
``model.safetensors`` (the head's weights) and, for a candidate predictor that has one, its
familiarity guard (:mod:`~polar_vllm.predictor.familiarity`). Every
problem found while loading is a :class:`~polar_vllm.predictor.errors.PredictorError` naming the
file and the expected and found values.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from polar_vllm.predictor.candidate_head import CandidateHead
from polar_vllm.predictor.encoder import TextEncoder
from polar_vllm.predictor.errors import PredictorError
from polar_vllm.predictor.familiarity import FamiliarityGuard, load_guard
from polar_vllm.predictor.network import PolarHead
from polar_vllm.predictor.predictor_config import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    PredictorConfig,
    model_matches,
    read_config,
    write_config,
)
from polar_vllm.predictor.selection import OperatingPoint
from polar_vllm.predictor.shipped import resolve_predictor_dir
from polar_vllm.program import (
    PolarForm,
    Program,
    ProgramError,
    canonical_polar_form,
    full_program,
    parse_program,
)

__all__ = [
    "CandidateSet",
    "Head",
    "Predictor",
    "build_head",
    "init_random_predictor",
    "load_predictor",
    "save_predictor",
]


@dataclass(frozen=True)
class CandidateSet:
    """A candidate predictor's programs in logit order, with their PoLar forms and lengths."""

    programs: tuple[Program, ...]
    forms: tuple[PolarForm, ...]
    lengths: torch.Tensor
    full_index: int

    @classmethod
    def of(cls, config: PredictorConfig) -> CandidateSet:
        """The candidate set of ``config`` (which validated every candidate)."""
        programs = tuple(config.candidate_program(i) for i in range(len(config.candidates)))
        forms = tuple(
            canonical_polar_form(p, config.depth, config.max_segment_len) for p in programs
        )
        lengths = torch.tensor([len(p) for p in programs])
        return cls(programs, forms, lengths, programs.index(full_program(config.depth)))


Head = PolarHead | CandidateHead
"""A trainable head of either kind (:data:`~polar_vllm.predictor.predictor_config.HEADS`)."""


def build_head(config: PredictorConfig) -> Head:
    """A freshly initialised head of the kind ``config.head`` names."""
    return CandidateHead(config) if config.head == "candidates" else PolarHead(config)


class Predictor:
    """A frozen text encoder and a trained head, ready to score questions.

    ``operating_point`` names the :class:`~polar_vllm.predictor.selection.OperatingPoint` of a
    candidate predictor (default: its config's ``operating_point``); it is refused for the
    ``polar_form`` head. ``guard``, a candidate predictor's familiarity guard, sends questions
    unlike its training questions to its fallback program, candidate ``guard_fallback``
    (the full program for those the guard's ``fallback_min_words`` finds too short:
    :meth:`guard_fallbacks`).
    """

    def __init__(
        self,
        config: PredictorConfig,
        head: Head,
        device: str = "cpu",
        operating_point: str | None = None,
        guard: FamiliarityGuard | None = None,
    ) -> None:
        self.config = config
        self.point = self._operating_point(operating_point)
        self.device = torch.device(device)
        self.encoder = TextEncoder(
            config.encoder, max_tokens=config.max_question_tokens, device=device
        )
        if self.encoder.dim != config.encoder_dim:
            raise PredictorError(
                f"encoder {config.encoder!r} gives {self.encoder.dim}-dim states but the predictor "
                f"was built for encoder_dim {config.encoder_dim}"
            )
        self.head = head.to(self.device).eval()
        self.candidates = CandidateSet.of(config) if config.head == "candidates" else None
        if guard is not None and self.candidates is None:
            raise PredictorError("a familiarity guard belongs to a candidate predictor")
        if guard is not None and guard.reference.shape[1] != self.encoder.dim:
            raise PredictorError(
                f"the familiarity guard holds {guard.reference.shape[1]}-dim embeddings but "
                f"encoder {config.encoder!r} gives {self.encoder.dim}"
            )
        self.guard = guard
        self.guard_fallback = None if guard is None else self.fallback_index(guard)

    def fallback_index(self, guard: FamiliarityGuard) -> int:
        """The candidate index of the program ``guard`` gives unfamiliar questions."""
        if self.candidates is None:
            raise PredictorError("a familiarity guard belongs to a candidate predictor")
        if guard.fallback is None:
            return self.candidates.full_index
        try:
            program = parse_program(guard.fallback, self.config.depth)
        except ProgramError as error:
            raise PredictorError(
                f"familiarity guard fallback {guard.fallback!r}: {error}"
            ) from None
        if program not in self.candidates.programs:
            raise PredictorError(
                f"familiarity guard fallback {guard.fallback!r} is not one of the predictor's "
                "candidates"
            )
        return self.candidates.programs.index(program)

    def guard_fallbacks(self, questions: Sequence[str]) -> list[int]:
        """The candidate index each of ``questions`` runs when the guard rejects it."""
        if self.guard is None or self.candidates is None:
            raise PredictorError("only a candidate predictor with a guard has fallbacks")
        full = self.candidates.full_index
        return [
            self.guard_fallback if takes else full for takes in self.guard.takes_fallback(questions)
        ]

    def with_point(self, point: OperatingPoint) -> Predictor:
        """A candidate predictor sharing this one's encoder and head, at ``point``."""
        if self.candidates is None:
            raise PredictorError("operating points belong to candidate predictors")
        other = copy.copy(self)
        other.point = point
        return other

    def _operating_point(self, name: str | None) -> OperatingPoint | None:
        """The named operating point (the config's default when ``name`` is None)."""
        config = self.config
        if config.head != "candidates":
            if name is not None:
                raise PredictorError(
                    f"operating point {name!r} given, but this predictor's head is "
                    f"{config.head!r}; operating points belong to candidate predictors"
                )
            return None
        name = name if name is not None else config.operating_point
        if name is None:
            return OperatingPoint()
        if name not in config.operating_points:
            raise PredictorError(
                f"unknown operating point {name!r}; this predictor has "
                f"{sorted(config.operating_points)}"
            )
        return OperatingPoint(**config.operating_points[name])


def _check_directory(directory: Path) -> tuple[Path, Path]:
    if not directory.exists():
        raise PredictorError(f"predictor directory {directory} does not exist")
    if not directory.is_dir():
        raise PredictorError(f"predictor path {directory} is not a directory")
    paths = []
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        path = directory / name
        if not path.is_file():
            raise PredictorError(
                f"predictor directory {directory} has no {name} "
                f"(expected {CONFIG_FILE} and {WEIGHTS_FILE})"
            )
        paths.append(path)
    return paths[0], paths[1]


def _load_weights(path: Path, head: Head) -> None:
    try:
        weights = load_file(str(path))
    except Exception as e:  # safetensors raises its own error type, or OSError
        raise PredictorError(f"predictor weights {path} are unreadable: {e}") from None
    expected = head.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise PredictorError(
            f"predictor weights {path} do not match config.yaml: missing tensors {missing}, "
            f"unexpected tensors {unexpected}"
        )
    for name, tensor in expected.items():
        if tuple(weights[name].shape) != tuple(tensor.shape):
            raise PredictorError(
                f"predictor weights {path}: tensor {name!r} has shape "
                f"{tuple(weights[name].shape)}, expected {tuple(tensor.shape)} from config.yaml"
            )
    head.load_state_dict(weights)


def load_predictor(
    directory: str | os.PathLike[str],
    *,
    expected_depth: int | None = None,
    expected_model: str | None = None,
    device: str = "cpu",
    operating_point: str | None = None,
    with_guard: bool = True,
) -> Predictor:
    """Load the predictor in ``directory``, checked against the served model.

    Args:
        directory: A predictor directory (``config.yaml`` + ``model.safetensors``), or the
            name of a shipped predictor (:func:`~polar_vllm.predictor.shipped.shipped_predictors`).
        expected_depth: The served model's number of layers; a different ``depth`` is an error.
        expected_model: The served model's name or path; see
            :func:`~polar_vllm.predictor.predictor_config.model_matches`.
        device: Torch device for the encoder and head.
        operating_point: A candidate predictor's operating point by name (default: the one
            its config names).
        with_guard: Load its familiarity guard, if it has one (False: the head alone, as when
            a new guard is chosen for it).

    Raises:
        PredictorError: missing directory or file, unreadable or invalid config or weights,
            unknown format version, depth or model mismatch, unknown operating point.
    """
    directory = Path(directory)
    if not directory.exists():
        directory = resolve_predictor_dir(directory)  # a shipped predictor's name, or an error
    config_path, weights_path = _check_directory(directory)
    config = read_config(config_path)
    if expected_depth is not None and config.depth != expected_depth:
        raise PredictorError(
            f"predictor {directory} was trained for a model of depth {config.depth} but the "
            f"served model has depth {expected_depth}"
        )
    if expected_model is not None and not model_matches(config.model, expected_model):
        raise PredictorError(
            f"predictor {directory} targets model {config.model!r} but the served model is "
            f"{expected_model!r}"
        )
    head = build_head(config)
    _load_weights(weights_path, head)
    guard = load_guard(directory) if with_guard else None
    return Predictor(config, head, device=device, operating_point=operating_point, guard=guard)


def save_predictor(directory: str | os.PathLike[str], config: PredictorConfig, head: Head) -> Path:
    """Write ``config.yaml`` and ``model.safetensors`` into ``directory`` (created if needed).

    Each file is written to a temporary name first and renamed, so a reader never sees half a
    file. Returns the directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {name: t.detach().cpu().contiguous() for name, t in head.state_dict().items()}
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        staged_weights = Path(scratch) / WEIGHTS_FILE
        staged_config = Path(scratch) / CONFIG_FILE
        save_file(weights, str(staged_weights), metadata={"format": "pt"})
        write_config(config, staged_config)
        os.replace(staged_weights, directory / WEIGHTS_FILE)
        os.replace(staged_config, directory / CONFIG_FILE)
    return directory


def init_random_predictor(
    directory: str | os.PathLike[str], model_name: str, depth: int, seed: int = 0
) -> Path:
    """Create a randomly initialised (untrained) predictor for ``model_name`` of ``depth`` layers.

    Its programs are arbitrary but valid; it exists so serving can be exercised before a
    trained predictor does. Returns the directory.
    """
    config = PredictorConfig(model=model_name, depth=depth, training={"untrained": True})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = PolarHead(config)
    return save_predictor(directory, config, head)
