"""Run settings of ``polar-vllm train`` and ``polar-vllm eval``, read from one YAML file.

Layout (see ``configs/predictor/``)::

    model: smollm2-135m            # bundled model name, or a model directory
    predictor_dir: runs/predictor/smollm2
    train: {labels: [...], epochs: 10, ...}     # TrainSettings fields
    eval: {levels: [1, 2, 3, 4], ...}          # EvalSettings fields

Relative paths are taken from the current directory. Unknown keys are errors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from polar_vllm.engine.config_loading import (
    check_keys,
    check_mapping,
    field_names,
    record_from_mapping,
)
from polar_vllm.predictor.errors import PredictorError
from polar_vllm.predictor.predictor_config import DEFAULT_ENCODER, DEFAULT_GUARD_QUANTILE, HEADS

__all__ = ["EFFICIENCY_COSTS", "EvalSettings", "RunSettings", "TrainSettings", "load_settings"]

EFFICIENCY_COSTS: tuple[str, ...] = ("layers", "served")
"""How the ``efficiency`` operating point is chosen (``TrainSettings.efficiency_cost``)."""


@dataclass(frozen=True)
class TrainSettings:
    """How to train a predictor from search labels.

    Attributes:
        labels: Label JSONL files for training (validation too, unless ``val_labels`` is set).
        val_labels: Separate validation label files; when empty, ``val_fraction`` of the
            training questions (seeded) are held out.
        val_fraction: Share of questions held out for validation when ``val_labels`` is empty.
        epochs, batch_size, lr, weight_decay: Optimisation (AdamW, cosine schedule); a batch is
            ``batch_size`` questions.
        patience: Stop once this many epochs in a row bring no lower validation loss (the
            best epoch is kept either way); ``null``: run every epoch.
        max_paths: Valid paths kept per question.
        full_path_weight: Weight of the full program when a shorter valid program exists.
        seed: Seed of initialisation, validation split, shuffling and dropout.
        encoder: Frozen text encoder name or path.
        dropout: Dropout in the head.
        levels: When set, only label records of these difficulty levels are used (the others
            stay held out, e.g. for an out-of-distribution evaluation).
        head: ``polar_form`` (the paper's head, trained on the valid paths of search labels) or
            ``candidates`` (scores the candidate set of dense labels, whose every program was
            run on every question; ``val_labels`` must then be dense labels of validation
            questions, on which the operating points are chosen).
        efficiency_layers: With the ``candidates`` head, the mean executed layers of the
            ``efficiency`` operating point, as a fraction of the model's depth.
        efficiency_cost: How the ``efficiency`` point is chosen within ``efficiency_layers``:
            ``layers``, the most accurate point; ``served``, the cheapest point in served
            layer-tokens (prompt, answer and LM head, priced from the answers stored with the
            dense validation labels and the model's tokenizer,
            :mod:`~polar_vllm.predictor.served_cost`) that is surely more accurate than the
            full program (a one-sided 95% bound) and than the best static program within
            the same layers.
        familiarity_quantile: With the ``candidates`` head, the share of validation questions
            the familiarity guard sends to its fallback program (its threshold,
            :mod:`~polar_vllm.predictor.familiarity`); ``null``: no guard.
        guard_val_labels: Dense labels of validation questions worded unlike the training
            questions (e.g. a hand-worded file); when set, the guard's quantile and its
            fallback (the full program or the best static program) are chosen on
            them, from ``familiarity_quantile`` up
            (:func:`~polar_vllm.predictor.candidate_training.choose_guard`).
        family_labels: Dense labels of questions in several wording families
            (:mod:`polar_vllm.data.wordings`; a question's family is named by its id,
            :func:`~polar_vllm.data.wordings.family_of`). Every ``family_val_every``-th
            question of each family and level (in file order) joins the validation
            questions, the rest the training questions.
        family_val_every: See ``family_labels``.
        gate_by_family: Choose the guard's quantile and fallback on held-out wording families
            (:mod:`~polar_vllm.predictor.family_gate`): every family of the training labels
            (the story generator's included) is scored by a head trained without it, and the
            ``guard_val_labels`` questions by the trained head, which never saw them.
    """

    labels: tuple[str, ...] = ()
    val_labels: tuple[str, ...] = ()
    val_fraction: float = 0.1
    epochs: int = 10
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.01
    patience: int | None = None
    max_paths: int = 50
    full_path_weight: float = 0.3
    seed: int = 0
    encoder: str = DEFAULT_ENCODER
    dropout: float = 0.1
    levels: tuple[int, ...] | None = None
    head: str = "polar_form"
    efficiency_layers: float = 0.85
    efficiency_cost: str = "layers"
    familiarity_quantile: float | None = DEFAULT_GUARD_QUANTILE
    guard_val_labels: tuple[str, ...] = ()
    family_labels: tuple[str, ...] = ()
    family_val_every: int = 3
    gate_by_family: bool = False

    def __post_init__(self) -> None:
        if self.patience is not None and self.patience < 1:
            raise PredictorError(f"train patience must be >= 1 or null, got {self.patience!r}")
        if self.family_val_every < 2:
            raise PredictorError(
                f"train family_val_every must be >= 2, got {self.family_val_every!r}"
            )
        if self.familiarity_quantile is not None and not 0.0 <= self.familiarity_quantile < 1.0:
            raise PredictorError(
                f"train familiarity_quantile must be in [0, 1) or null, got "
                f"{self.familiarity_quantile!r}"
            )
        if self.head not in HEADS:
            raise PredictorError(f"train head must be one of {HEADS}, got {self.head!r}")
        if self.efficiency_cost not in EFFICIENCY_COSTS:
            raise PredictorError(
                f"train efficiency_cost must be one of {EFFICIENCY_COSTS}, got "
                f"{self.efficiency_cost!r}"
            )
        if not 0.0 < self.efficiency_layers <= 2.0:
            raise PredictorError(
                f"train efficiency_layers must be in (0, 2], got {self.efficiency_layers!r}"
            )


@dataclass(frozen=True)
class EvalSettings:
    """How to evaluate a predictor against the baselines, always by running the programs.

    Attributes:
        backend: ``"vllm"`` (PoLar vLLM engine) or ``"reference"`` (transformers, greedy only).
        dtype: Model dtype.
        levels: In-distribution generated difficulty levels.
        ood_levels: Held-out generated levels (out of distribution).
        ood_files: Extra out-of-distribution JSONL files (GSM8K / ASDiv style).
        families: Wording families (:mod:`polar_vllm.data.wordings`) the predictor trained
            on: ``family_count_per_level`` test questions of each per level, drawn with
            ``family_seed`` (questions of ``exclude_labels`` left out), reported per family.
        ood_families: Wording families held out of training and of every choice: the
            out-of-distribution test, drawn the same way, reported per family.
        family_count_per_level: Test questions per family and level.
        family_seed: Seed of the families' test questions (other than the labels' seed).
        count_per_level: Test questions per level.
        data_seed: Seed of the generated problems.
        split: Generated problems per level for train/val/test; the test part is evaluated.
        exclude_labels: Label files whose questions must not be evaluated (training data).
        max_tokens: Tokens generated per answer.
        top_k: Programs per question for pass@k (pass@1 uses the first).
        length_aware: Rank the predictor's programs length-aware.
        temperatures: Sampling baseline grid (empty: no sampling baseline).
        samples: Samples per question for the sampling baseline (pass@1 averages them).
        static_skip_layers: Layers the static-skip baseline drops (0: no such baseline).
        calibration_questions: Training questions used to measure layer importance.
        dense_labels: Dense label files of training and validation questions (never test
            ones): the fixed program right most often on them runs as ``best_static``, and the
            best one within ``efficiency_layers * D`` layers as ``best_static_short``.
        efficiency_layers: The layer budget of ``best_static_short``, as a fraction of ``D``.
        frontier_points: A candidate predictor also runs at up to this many operating points
            of its validation frontier (``frontier@i``), tracing its accuracy-layers frontier
            on the test questions.
        oracle_labels: Label files of a search over some of the test questions, for
            reporting only: the oracle upper bound on those questions (``oracle``).
        compare_predictors: Further trained predictor directories (or shipped names), each
            run beside the evaluated one in the same engine run as ``polar[<name>]``, e.g. a
            predictor trained on another label source.
        output: JSON result path; the plots go next to it (``.png``, ``_frontier.png``).
    """

    backend: str = "vllm"
    dtype: str = "float32"
    levels: tuple[int, ...] = (1, 2, 3, 4)
    ood_levels: tuple[int, ...] = (5,)
    ood_files: tuple[str, ...] = ()
    families: tuple[str, ...] = ()
    ood_families: tuple[str, ...] = ()
    family_count_per_level: int = 20
    family_seed: int = 1
    count_per_level: int = 100
    data_seed: int = 0
    split: tuple[int, int, int] = (1250, 250, 500)
    exclude_labels: tuple[str, ...] = ()
    max_tokens: int = 16
    top_k: int = 5
    length_aware: bool = False
    temperatures: tuple[float, ...] = (0.3, 0.7, 1.0)
    samples: int = 5
    static_skip_layers: int = 4
    calibration_questions: int = 32
    dense_labels: tuple[str, ...] = ()
    efficiency_layers: float = 0.85
    frontier_points: int = 0
    oracle_labels: tuple[str, ...] = ()
    compare_predictors: tuple[str, ...] = ()
    output: str = "runs/predictor/eval.json"

    def __post_init__(self) -> None:
        if self.backend not in ("vllm", "reference"):
            raise PredictorError(
                f"eval backend must be 'vllm' or 'reference', got {self.backend!r}"
            )
        if self.backend == "reference" and self.temperatures:
            raise PredictorError("the reference backend is greedy only: set eval temperatures: []")
        if len(self.split) != 3:
            raise PredictorError(f"eval split must be [train, val, test], got {list(self.split)}")


@dataclass(frozen=True)
class RunSettings:
    """A whole run file: target model, predictor directory, train and eval settings."""

    model: str
    predictor_dir: str
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)


_T = TypeVar("_T")


def _build(cls: type[_T], values: Any, where: str) -> _T:
    values = check_mapping({} if values is None else values, where, PredictorError)
    converted = {
        key: tuple(value) if isinstance(value, list) else value for key, value in values.items()
    }
    return record_from_mapping(cls, converted, where, PredictorError)


def load_settings(path: str | os.PathLike[str]) -> RunSettings:
    """Read a run YAML file; raises :class:`PredictorError` naming the problem."""
    path = Path(path)
    try:
        record = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise PredictorError(f"run config {path} cannot be read: {e}") from None
    where = f"run config {path}"
    check_mapping(record, where, PredictorError, "a YAML mapping")
    check_keys(
        record, field_names(RunSettings), where, PredictorError, required=("model", "predictor_dir")
    )
    return RunSettings(
        model=str(record["model"]),
        predictor_dir=str(record["predictor_dir"]),
        train=_build(TrainSettings, record.get("train"), f"{path}: train"),
        eval=_build(EvalSettings, record.get("eval"), f"{path}: eval"),
    )
