"""The familiarity guard: a fixed program for questions unlike any the predictor learned from.

A candidate predictor is trained on the questions of its labels, and what it learned about
which layers a question can skip need not carry over to questions worded unlike them: on
reworded questions its skips can lose answers that the full program gets right. The guard
measures how familiar a question is, as the highest cosine similarity of its sentence embedding
(the masked mean of the predictor's own encoder states, normalised) to the embeddings of the
training questions, and sends questions below a threshold to its *fallback* program instead of
an extrapolation: the full program (stock vLLM's behaviour) by default, or one fixed candidate
chosen on training and validation questions (the best static program), when hand-worded
validation questions show that it serves reworded questions better. A fallback may also
apply by length (``fallback_min_words``): a rejected question of at least that many words
(:func:`question_words`) runs the fallback program, a shorter one the full program. Word
problems and bare arithmetic ("27 + 26 = ?", "Add 14 and 33.") answer best under different
programs, and a question's word count tells them apart in any wording.

The threshold is chosen on validation questions only: the ``quantile`` (default 1%) of their
familiarity, so that about that share of in-distribution questions falls back. Given
validation questions worded unlike the generator's (dense labels of a hand-worded file), the
quantile and the fallback are chosen on them
(:func:`~polar_vllm.predictor.candidate_training.choose_guard`). The training embeddings
(float16), the threshold and the fallback are stored next to the predictor in
:data:`GUARD_FILE`; a predictor without that file has no guard.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from polar_vllm.predictor.encoder import EncodedBatch, TextEncoder
from polar_vllm.predictor.errors import PredictorError

__all__ = [
    "GUARD_FILE",
    "FamiliarityGuard",
    "embed_questions",
    "fit_guards",
    "guards_of_embeddings",
    "load_guard",
    "question_embeddings",
    "question_words",
    "save_guard",
]

GUARD_FILE = "familiarity.safetensors"
"""The guard's file in a predictor directory."""

_BATCH_SIZE = 64
_WORD_RE = re.compile(r"[^\W\d_]{2,}")  # runs of two or more letters, in any script


def question_words(question: str) -> int:
    """The words of ``question``: runs of two or more letters. Numbers, operators and
    one-letter names (``x``, ``n``) do not count, so ``"27 + 26 = ?"`` has none and
    ``"Add 14 and 33."`` two."""
    return len(_WORD_RE.findall(question))


def question_embeddings(encoded: EncodedBatch) -> torch.Tensor:
    """Unit-length sentence embeddings [B, E]: the masked mean of the token states."""
    weights = encoded.mask.unsqueeze(-1).to(encoded.states.dtype)
    mean = (encoded.states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    return torch.nn.functional.normalize(mean.float(), dim=-1)


def embed_questions(encoder: TextEncoder, questions: Sequence[str]) -> torch.Tensor:
    """:func:`question_embeddings` of ``questions`` [Q, E], encoded in batches, on the CPU."""
    chunks = [
        question_embeddings(encoder.encode(list(questions[first : first + _BATCH_SIZE]))).cpu()
        for first in range(0, len(questions), _BATCH_SIZE)
    ]
    return torch.cat(chunks) if chunks else torch.zeros(0, encoder.dim)


@dataclass(frozen=True)
class FamiliarityGuard:
    """Training-question embeddings ``reference`` [N, E] (float32 holding float16 values, as
    stored), the familiarity ``threshold`` (chosen as the ``quantile`` of the validation
    questions' familiarity) and the ``fallback`` program of the questions below it (program
    text, one of the predictor's candidates; None: the full program). With
    ``fallback_min_words`` only those of at least that many words (:func:`question_words`)
    run ``fallback``; shorter ones run the full program."""

    reference: torch.Tensor
    threshold: float
    quantile: float
    fallback: str | None = None
    fallback_min_words: int | None = None

    def takes_fallback(self, questions: Sequence[str]) -> list[bool]:
        """Whether each of ``questions``, once rejected, runs ``fallback`` (else the full
        program)."""
        if self.fallback is None:
            return [False] * len(questions)
        if self.fallback_min_words is None:
            return [True] * len(questions)
        return [question_words(q) >= self.fallback_min_words for q in questions]

    def familiarity(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The highest cosine similarity of each embedding [B, E] to a training question [B]."""
        reference = self.reference.to(embeddings.device)
        return (embeddings.float() @ reference.T).max(dim=1).values

    def familiar(self, embeddings: torch.Tensor) -> torch.Tensor:
        """True where a question is familiar enough for the predictor's choice [B]."""
        return self.familiarity(embeddings) >= self.threshold


def fit_guards(
    encoder: TextEncoder,
    train_questions: Sequence[str],
    val_questions: Sequence[str],
    quantiles: Sequence[float],
) -> list[FamiliarityGuard]:
    """One guard per quantile, sharing one reference: each threshold sends that share of
    ``val_questions`` (the least familiar ones) to the full program (the default fallback)."""
    if not train_questions or not val_questions:
        raise PredictorError("the familiarity guard needs training and validation questions")
    return guards_of_embeddings(
        embed_questions(encoder, list(dict.fromkeys(train_questions))),
        embed_questions(encoder, val_questions),
        quantiles,
    )


def guards_of_embeddings(
    reference: torch.Tensor, val_embeddings: torch.Tensor, quantiles: Sequence[float]
) -> list[FamiliarityGuard]:
    """:func:`fit_guards` from embeddings already computed: the training questions'
    ``reference`` [N, E] and the validation questions' [V, E]."""
    for quantile in quantiles:
        if not 0.0 <= quantile < 1.0:
            raise PredictorError(f"familiarity quantile must be in [0, 1), got {quantile}")
    if reference.shape[0] == 0 or val_embeddings.shape[0] == 0:
        raise PredictorError("the familiarity guard needs training and validation questions")
    # Rounded to float16 as stored, so a fitted guard and its loaded copy agree exactly.
    unfitted = FamiliarityGuard(reference.half().float(), threshold=0.0, quantile=0.0)
    val_familiarity = unfitted.familiarity(val_embeddings)
    return [
        FamiliarityGuard(unfitted.reference, float(torch.quantile(val_familiarity, q)), q)
        for q in quantiles
    ]


def save_guard(directory: str | os.PathLike[str], guard: FamiliarityGuard) -> Path:
    """Write ``guard`` to :data:`GUARD_FILE` in ``directory``; returns the file."""
    path = Path(directory) / GUARD_FILE
    staged = path.with_suffix(".tmp")
    metadata = {"threshold": repr(guard.threshold), "quantile": repr(guard.quantile)}
    if guard.fallback is not None:
        metadata["fallback"] = guard.fallback
    if guard.fallback_min_words is not None:
        metadata["fallback_min_words"] = str(guard.fallback_min_words)
    save_file({"reference": guard.reference.half().contiguous()}, str(staged), metadata=metadata)
    os.replace(staged, path)
    return path


def load_guard(directory: str | os.PathLike[str]) -> FamiliarityGuard | None:
    """The guard stored in ``directory``, or None when it has none."""
    from safetensors import safe_open

    path = Path(directory) / GUARD_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            reference = handle.get_tensor("reference")
        threshold, quantile = float(metadata["threshold"]), float(metadata["quantile"])
        fallback = metadata.get("fallback")  # absent in guards that predate the choice
        min_words = metadata.get("fallback_min_words")
        fallback_min_words = None if min_words is None else int(min_words)
    except Exception as error:  # safetensors raises its own error type, or OSError
        raise PredictorError(f"familiarity guard {path} is unreadable: {error!r}") from None
    if reference.ndim != 2:
        raise PredictorError(f"familiarity guard {path}: reference must be [N, E]")
    return FamiliarityGuard(reference.float(), threshold, quantile, fallback, fallback_min_words)
