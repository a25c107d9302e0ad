"""Batched prediction: questions -> ranked programs (the API the server front end calls)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from polar_vllm.predictor.decoding import DecodeOptions, ScoredProgram, decode
from polar_vllm.predictor.familiarity import question_embeddings
from polar_vllm.predictor.selection import guard_applies, rank
from polar_vllm.predictor.storage import Predictor
from polar_vllm.program import Program

__all__ = ["PredictionTimes", "decode_options", "predict_programs", "predict_scored"]

BATCH_SIZE = 64
"""Questions encoded together in one forward pass."""


@dataclass
class PredictionTimes:
    """Seconds spent in each stage of a prediction call, summed over its batches."""

    encoder: float = 0.0
    head: float = 0.0
    decoding: float = 0.0
    questions: int = 0
    batches: list[int] = field(default_factory=list)


def decode_options(
    predictor: Predictor, *, top_k: int = 1, length_aware: bool = False
) -> DecodeOptions:
    """The predictor's decoding settings, with a beam at least ``top_k`` wide."""
    config = predictor.config
    return DecodeOptions(
        boundary_threshold=config.boundary_threshold,
        max_segment_len=config.max_segment_len,
        beam_width=max(config.beam_width, top_k),
        ops_per_segment=config.ops_per_segment,
        length_aware=length_aware,
        length_penalty=config.length_penalty,
    )


def _rank_candidates(
    predictor: Predictor,
    questions: Sequence[str],
    logits: torch.Tensor,
    familiar: torch.Tensor | None,
    top_k: int,
) -> list[list[ScoredProgram]]:
    """The ``top_k`` candidates of each of ``questions`` (rows of ``logits`` [B, C]) at the
    predictor's operating point, each scored by its probability of answering right; rows the
    familiarity guard rejects (``familiar`` False) rank the guard's fallback for that question
    first (unless the operating point always runs the full program)."""
    candidates = predictor.candidates
    probs = torch.sigmoid(logits)
    order = rank(
        probs, candidates.lengths, predictor.config.depth, candidates.full_index, predictor.point
    )
    if familiar is not None and guard_applies(predictor.point):
        fallbacks = predictor.guard_fallbacks(questions)
        order = [
            ranked if known else [fallback, *(c for c in ranked if c != fallback)]
            for ranked, known, fallback in zip(order, familiar.tolist(), fallbacks, strict=True)
        ]
    return [
        [ScoredProgram(candidates.forms[c], float(probs[row, c])) for c in ranked[:top_k]]
        for row, ranked in enumerate(order)
    ]


@torch.no_grad()
def predict_scored(
    predictor: Predictor,
    questions: Sequence[str],
    *,
    top_k: int = 1,
    length_aware: bool = False,
    times: PredictionTimes | None = None,
) -> list[list[ScoredProgram]]:
    """The ``top_k`` best labellings of each question, best first, with their scores.

    A ``candidates`` predictor ranks its candidate set at its operating point (the first is its
    choice, with the fallback to the full program applied, and the guard's fallback program
    for questions its familiarity guard rejects; scores are probabilities of answering right)
    and ignores ``length_aware``. When ``times`` is given, the seconds spent in the encoder,
    the head and decoding are added to it.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    options = decode_options(predictor, top_k=top_k, length_aware=length_aware)
    times = times if times is not None else PredictionTimes()
    results: list[list[ScoredProgram]] = []
    for first in range(0, len(questions), BATCH_SIZE):
        chunk = list(questions[first : first + BATCH_SIZE])
        start = time.perf_counter()
        encoded = predictor.encoder.encode(chunk)
        after_encoder = time.perf_counter()
        outputs = predictor.head(encoded.states, encoded.mask)
        familiar = None
        if predictor.guard is not None:
            familiar = predictor.guard.familiar(question_embeddings(encoded)).cpu()
        after_head = time.perf_counter()
        if predictor.candidates is not None:
            results.extend(
                _rank_candidates(predictor, chunk, outputs.float().cpu(), familiar, top_k)
            )
        else:
            boundary, ops = (tensor.float().cpu() for tensor in outputs)
            for row in range(len(chunk)):
                results.append(decode(boundary[row], ops[row], options)[:top_k])
        end = time.perf_counter()
        times.encoder += after_encoder - start
        times.head += after_head - after_encoder
        times.decoding += end - after_head
        times.questions += len(chunk)
        times.batches.append(len(chunk))
    return results


def predict_programs(
    predictor: Predictor, questions: list[str], top_k: int = 1, length_aware: bool = False
) -> list[list[Program]]:
    """The ``top_k`` best programs of each question (lists of layer indices), best first.

    One call encodes all questions in batches, so concurrent requests share the work.
    """
    scored = predict_scored(predictor, questions, top_k=top_k, length_aware=length_aware)
    return [[item.program for item in ranked] for ranked in scored]
