"""Training the predictor head on search labels.

Loss, per question: binary cross-entropy of the boundary logits of layers ``1..D-1`` (layer 0
always starts a segment, so it carries no signal) plus cross-entropy of the op logits at
*every* layer, the target of a layer being the op of the segment that holds it. Training every
layer (rather than only segment starts) gives each layer's op logits a target even where a
labelled boundary falls elsewhere, and decoding reads a segment's op as the mean of its layers'
log-probabilities (:mod:`polar_vllm.predictor.decoding`).

A question's paths are weighted (:mod:`polar_vllm.predictor.labels`, weights summing to 1).
Both losses are linear in their targets, so the weighted sum of the losses over a question's
paths equals one loss against the weighted-mean (soft) targets: a training example is a
question with soft targets, and a batch holds ``batch_size`` questions.

The encoder is frozen, so its token states are computed once per question before training.
Optimisation: AdamW, cosine learning-rate schedule over all steps, the checkpoint with the
lowest validation loss is kept. Everything random (initialisation, validation split,
shuffling, dropout) follows the seed, so the same seed gives the same weights.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from tqdm import tqdm

from polar_vllm.predictor.candidate_head import CandidateHead
from polar_vllm.predictor.encoder import TextEncoder
from polar_vllm.predictor.errors import PredictorError
from polar_vllm.predictor.labels import QuestionTargets, build_targets, read_labels
from polar_vllm.predictor.predictor_config import OP_SPACE, PredictorConfig
from polar_vllm.predictor.run_settings import RunSettings, TrainSettings
from polar_vllm.predictor.storage import Head, build_head, save_predictor
from polar_vllm.search.labels import LabelRecord

__all__ = [
    "EncodedSet",
    "TrainResult",
    "encode_questions",
    "encode_set",
    "head_loss",
    "of_levels",
    "plot_losses",
    "predictor_loss",
    "split_validation",
    "train_from_settings",
    "train_head",
]

_T = TypeVar("_T")

HISTORY_FILE = "train_history.json"
PLOT_FILE = "loss_curve.png"


@dataclass
class EncodedSet:
    """Questions ready for training: frozen encoder states and soft targets.

    ``states[i]`` is [T_i, E] (float16, no padding); ``boundaries`` [Q, D] and ``ops`` [Q, D, 3]
    are the weighted-mean targets of each question.
    """

    ids: list[str]
    states: list[torch.Tensor]
    boundaries: torch.Tensor
    ops: torch.Tensor
    candidates: torch.Tensor | None = None
    """For a candidate head: [Q, C] correctness (0/1) of every candidate on every question."""

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded states [B, T, E] (float32) and mask [B, T] of ``rows``."""
        longest = max(self.states[r].shape[0] for r in rows)
        dim = self.states[rows[0]].shape[1]
        states = torch.zeros(len(rows), longest, dim)
        mask = torch.zeros(len(rows), longest, dtype=torch.bool)
        for i, r in enumerate(rows):
            length = self.states[r].shape[0]
            states[i, :length] = self.states[r].float()
            mask[i, :length] = True
        return states, mask


def encode_questions(
    questions: Sequence[str], encoder: TextEncoder, batch_size: int = 64
) -> list[torch.Tensor]:
    """The frozen encoder's token states of every question ([T_i, E], float16, no padding)."""
    states: list[torch.Tensor] = []
    for first in tqdm(
        range(0, len(questions), batch_size), desc="encoding questions", unit="batch", leave=False
    ):
        encoded = encoder.encode(list(questions[first : first + batch_size]))
        for row in range(encoded.states.shape[0]):
            keep = encoded.mask[row]
            states.append(encoded.states[row, keep].to(torch.float16).cpu())
    return states


def encode_set(
    targets: Sequence[QuestionTargets], encoder: TextEncoder, depth: int, batch_size: int = 64
) -> EncodedSet:
    """Encode every question once and build its soft targets."""
    states = encode_questions([t.question for t in targets], encoder, batch_size)
    boundaries = torch.zeros(len(targets), depth)
    ops = torch.zeros(len(targets), depth, len(OP_SPACE))
    for q, target in enumerate(targets):
        for path in target.paths:
            boundaries[q] += path.weight * torch.tensor(path.boundaries, dtype=torch.float32)
            ops[q] += path.weight * F.one_hot(torch.tensor(path.layer_ops), len(OP_SPACE)).float()
    return EncodedSet([t.id for t in targets], states, boundaries, ops)


def predictor_loss(
    boundary_logits: torch.Tensor,
    op_logits: torch.Tensor,
    boundary_targets: torch.Tensor,
    op_targets: torch.Tensor,
) -> torch.Tensor:
    """Mean over the batch of boundary BCE (layers 1..D-1) + op CE (all layers), soft targets."""
    boundary = F.binary_cross_entropy_with_logits(
        boundary_logits[:, 1:], boundary_targets[:, 1:], reduction="none"
    ).mean(dim=1)
    ops = -(op_targets * torch.log_softmax(op_logits, dim=-1)).sum(dim=-1).mean(dim=1)
    return (boundary + ops).mean()


def head_loss(
    config: PredictorConfig, outputs: Any, data: EncodedSet, rows: Sequence[int]
) -> torch.Tensor:
    """The training loss of a head's ``outputs`` on ``rows`` of ``data``: BCE against the
    candidates' correctness for a candidate head, else :func:`predictor_loss`."""
    if config.head == "candidates":
        assert data.candidates is not None, "a candidate head trains on dense labels"
        return F.binary_cross_entropy_with_logits(outputs, data.candidates[rows])
    boundary, ops = outputs
    return predictor_loss(boundary, ops, data.boundaries[rows], data.ops[rows])


@dataclass
class TrainResult:
    """Outcome of training: the best head and the loss history."""

    head: Head
    best_epoch: int
    best_val_loss: float | None
    history: dict[str, list[float]] = field(default_factory=dict)


@torch.no_grad()
def _evaluate_loss(config: PredictorConfig, head: Head, data: EncodedSet, batch_size: int) -> float:
    head.eval()
    total = 0.0
    for first in range(0, len(data), batch_size):
        rows = list(range(first, min(first + batch_size, len(data))))
        states, mask = data.batch(rows)
        loss = head_loss(config, head(states, mask), data, rows)
        total += float(loss) * len(rows)
    return total / len(data)


def train_head(
    config: PredictorConfig,
    train: EncodedSet,
    val: EncodedSet | None,
    settings: TrainSettings,
    *,
    on_best: Callable[[Head, int], None] | None = None,
) -> TrainResult:
    """Train a fresh head of ``config.head``'s kind; keeps the epoch with the lowest
    validation loss. A candidate head starts from its candidates' training base rates.

    Without validation questions the last epoch is kept. ``on_best`` is called with the head
    and the epoch each time a new best epoch is found (to checkpoint it).
    """
    if len(train) == 0:
        raise PredictorError("no training questions with a PoLar-form valid program")
    steps_per_epoch = math.ceil(len(train) / settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    history: dict[str, list[float]] = {"step_loss": [], "train_loss": [], "val_loss": []}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        head = build_head(config)
        if isinstance(head, CandidateHead):
            head.set_base_rates(train.candidates.mean(dim=0))
        optimizer = torch.optim.AdamW(
            head.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
        )
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
        shuffler = torch.Generator().manual_seed(settings.seed)
        best_state, best_epoch, best_loss = None, 0, math.inf
        progress = tqdm(range(1, settings.epochs + 1), desc="training predictor", unit="epoch")
        for epoch in progress:
            head.train()
            order = torch.randperm(len(train), generator=shuffler).tolist()
            epoch_loss = 0.0
            for first in range(0, len(order), settings.batch_size):
                rows = order[first : first + settings.batch_size]
                states, mask = train.batch(rows)
                loss = head_loss(config, head(states, mask), train, rows)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                history["step_loss"].append(loss.item())
                epoch_loss += loss.item() * len(rows)
            history["train_loss"].append(epoch_loss / len(train))
            score = history["train_loss"][-1]
            if val is not None and len(val):
                score = _evaluate_loss(config, head, val, settings.batch_size)
                history["val_loss"].append(score)
            progress.set_postfix(train=f"{history['train_loss'][-1]:.4f}", val=f"{score:.4f}")
            if val is None or len(val) == 0 or score < best_loss:
                best_state, best_epoch, best_loss = copy.deepcopy(head.state_dict()), epoch, score
                if on_best is not None:
                    on_best(head, epoch)
            elif settings.patience is not None and epoch - best_epoch >= settings.patience:
                break  # no better validation loss for `patience` epochs
    assert best_state is not None
    head.load_state_dict(best_state)
    head.eval()
    has_val = val is not None and len(val) > 0
    return TrainResult(head, best_epoch, best_loss if has_val else None, history)


def plot_losses(history: dict[str, list[float]], path: Path) -> None:
    """Write the loss curves (per-step training loss, per-epoch train and validation) to PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = history["step_loss"]
    epochs = len(history["train_loss"])
    per_epoch = len(steps) / max(epochs, 1)
    ax.plot([(i + 1) / per_epoch for i in range(len(steps))], steps, alpha=0.35, label="batch")
    ax.plot(range(1, epochs + 1), history["train_loss"], marker="o", label="train")
    if history["val_loss"]:
        ax.plot(range(1, epochs + 1), history["val_loss"], marker="o", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.set_title("PoLar predictor training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def split_validation(items: Sequence[_T], fraction: float, seed: int) -> tuple[list[_T], list[_T]]:
    """``items`` without and with a seeded ``fraction`` of them held out for validation (each
    part in input order)."""
    order = list(range(len(items)))
    random.Random(f"polar-vllm-predictor-val:{seed}").shuffle(order)
    count = round(len(items) * fraction)
    held = set(order[:count])
    train = [t for i, t in enumerate(items) if i not in held]
    return train, [t for i, t in enumerate(items) if i in held]


def of_levels(records: list[LabelRecord], levels: tuple[int, ...] | None) -> list[LabelRecord]:
    """The records of ``levels`` (all records when ``levels`` is ``None``)."""
    return records if levels is None else [r for r in records if r.level in levels]


def train_from_settings(
    settings: RunSettings, directory: str | os.PathLike[str] | None = None
) -> TrainResult:
    """Train a predictor as ``settings`` say and write it (with its loss history and plot).

    The predictor goes to ``directory`` (default ``settings.predictor_dir``); the depth comes
    from the labels.
    """
    train_settings = settings.train
    if train_settings.head == "candidates":
        from polar_vllm.predictor.candidate_training import train_candidates

        return train_candidates(settings, directory)
    if not train_settings.labels:
        raise PredictorError("train settings name no label files (train: labels: [...])")
    records = of_levels(read_labels(train_settings.labels), train_settings.levels)
    if not records:
        raise PredictorError(
            f"label files {list(train_settings.labels)} hold no records"
            + ("" if train_settings.levels is None else f" of levels {train_settings.levels}")
        )
    depth = records[0].depth
    options = {
        "model": settings.model,
        "depth": depth,
        "max_paths": train_settings.max_paths,
        "full_path_weight": train_settings.full_path_weight,
    }
    targets = build_targets(records, **options)
    if train_settings.val_labels:
        train_targets = targets
        val_records = of_levels(read_labels(train_settings.val_labels), train_settings.levels)
        val_targets = build_targets(val_records, **options)
    else:
        train_targets, val_targets = split_validation(
            targets, train_settings.val_fraction, train_settings.seed
        )
    config = PredictorConfig(
        model=settings.model,
        depth=depth,
        encoder=train_settings.encoder,
        dropout=train_settings.dropout,
    )
    encoder = TextEncoder(config.encoder, max_tokens=config.max_question_tokens)
    config = replace(config, encoder_dim=encoder.dim)
    train_set = encode_set(train_targets, encoder, depth)
    val_set = encode_set(val_targets, encoder, depth) if val_targets else None
    out = Path(directory if directory is not None else settings.predictor_dir)

    result = train_head(
        config,
        train_set,
        val_set,
        train_settings,
        on_best=lambda head, epoch: save_predictor(out, config, head),
    )
    record = {
        "seed": train_settings.seed,
        "epochs": train_settings.epochs,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "train_questions": len(train_set),
        "val_questions": len(val_set) if val_set is not None else 0,
        "labels": [Path(p).name for p in train_settings.labels],
    }
    config = replace(config, training=record)
    save_predictor(out, config, result.head)
    (out / HISTORY_FILE).write_text(json.dumps({**record, **result.history}, indent=1))
    plot_losses(result.history, out / PLOT_FILE)
    return result
