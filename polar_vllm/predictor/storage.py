"""Predictor directories: the loaded :class:`Predictor`, loading with checks, saving, random init.

Layout: ``config.yaml`` (:class:`~polar_vllm.predictor.config.PredictorConfig`) and
``model.safetensors`` (the :class:`~polar_vllm.predictor.network.PolarHead` weights). Every
problem found while loading is a :class:`~polar_vllm.predictor.errors.PredictorError` naming the
file and the expected and found values.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from polar_vllm.predictor.config import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    PredictorConfig,
    model_matches,
    read_config,
    write_config,
)
from polar_vllm.predictor.encoder import TextEncoder
from polar_vllm.predictor.errors import PredictorError
from polar_vllm.predictor.network import PolarHead
from polar_vllm.predictor.shipped import resolve_predictor_dir

__all__ = [
    "Predictor",
    "init_random_predictor",
    "load_predictor",
    "save_predictor",
]


class Predictor:
    """A frozen text encoder and a trained head, ready to score questions."""

    def __init__(self, config: PredictorConfig, head: PolarHead, device: str = "cpu") -> None:
        self.config = config
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

    @torch.no_grad()
    def logits(self, questions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Boundary logits [B, D] and op logits [B, D, 3] for ``questions`` (on the CPU)."""
        batch = self.encoder.encode(questions)
        boundary, ops = self.head(batch.states, batch.mask)
        return boundary.float().cpu(), ops.float().cpu()


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


def _load_weights(path: Path, head: PolarHead) -> None:
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
) -> Predictor:
    """Load the predictor in ``directory``, checked against the served model.

    Args:
        directory: A predictor directory (``config.yaml`` + ``model.safetensors``), or the
            name of a shipped predictor (:func:`~polar_vllm.predictor.shipped.shipped_predictors`).
        expected_depth: The served model's number of layers; a different ``depth`` is an error.
        expected_model: The served model's name or path; see
            :func:`~polar_vllm.predictor.config.model_matches`.
        device: Torch device for the encoder and head.

    Raises:
        PredictorError: missing directory or file, unreadable or invalid config or weights,
            unknown format version, depth or model mismatch.
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
    head = PolarHead(config)
    _load_weights(weights_path, head)
    return Predictor(config, head, device=device)


def save_predictor(
    directory: str | os.PathLike[str], config: PredictorConfig, head: PolarHead
) -> Path:
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
