"""Predictors shipped inside the package, addressed by the bundled model's name."""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

from polar_vllm.predictor.errors import PredictorError

__all__ = ["resolve_predictor_dir", "shipped_predictors"]


def _shipped_root() -> Path:
    return Path(str(importlib.resources.files("polar_vllm") / "predictors"))


def shipped_predictors() -> dict[str, Path]:
    """Name -> directory of every predictor shipped with polar-vllm (e.g. ``smollm2-135m``)."""
    root = _shipped_root()
    if not root.is_dir():
        return {}
    return {path.name: path for path in sorted(root.iterdir()) if (path / "config.yaml").is_file()}


def resolve_predictor_dir(spec: str | os.PathLike[str]) -> Path:
    """The predictor directory ``spec`` names: an existing directory, else the name of a
    shipped predictor.

    Raises:
        PredictorError: ``spec`` is neither (the message lists the shipped names).
    """
    directory = Path(spec).expanduser()
    if directory.is_dir():
        return directory
    shipped = shipped_predictors()
    if str(spec) in shipped:
        return shipped[str(spec)]
    raise PredictorError(
        f"predictor directory {directory} does not exist, and no shipped predictor is named "
        f"{str(spec)!r} (shipped: {sorted(shipped)})"
    )
