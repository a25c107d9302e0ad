"""Settings of a search run, read from a YAML file (every key optional except ``model``).

Relative paths in the file (``output_dir``, ``data_file``) are taken relative to the current
directory, so configs are written to be run from the repository root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from polar_vllm.data import LEVELS, SYSTEM_PROMPT
from polar_vllm.data.wordings import WORDING_FAMILIES
from polar_vllm.engine.config import SCHEDULING_POLICIES
from polar_vllm.engine.config_loading import check_mapping, record_from_mapping
from polar_vllm.program import Program, parse_program
from polar_vllm.search.actions import ActionSpace, length_window
from polar_vllm.search.dense import candidate_programs
from polar_vllm.search.mcts import MctsSettings

__all__ = ["BACKENDS", "METHODS", "SPLIT_PARTS", "SearchConfig", "load_search_config"]

BACKENDS: tuple[str, ...] = ("vllm", "reference")
"""``vllm``: batched PoLar engine; ``reference``: transformers, one request at a time."""

METHODS: tuple[str, ...] = ("mcts", "dense")
"""``mcts``: a program search per question; ``dense``: a fixed candidate set on every question
(:mod:`polar_vllm.search.dense`)."""

SPLIT_PARTS: tuple[str, ...] = ("train", "val", "test")
"""The parts of a generated split (:func:`polar_vllm.data.split_problems`) a search may take."""


@dataclass(frozen=True)
class SearchConfig:
    """One search run: model and back end, questions, search parameters, outputs."""

    model: str
    method: str = "mcts"
    backend: str = "vllm"
    dtype: str = "float32"
    max_model_len: int = 1024
    levels: tuple[int, ...] = LEVELS
    questions_per_level: int = 100
    data_seed: int = 0
    data_file: str | None = None
    families: tuple[str, ...] = ()
    split: tuple[int, int, int] | None = None
    split_part: str = "train"
    chat_template: bool = True
    max_tokens: int = 16
    seed: int = 0
    simulations: int = MctsSettings.simulations
    layer_cost: float = MctsSettings.layer_cost
    exploration: float = MctsSettings.exploration
    random_expand: float = MctsSettings.random_expand
    leaves_per_round: int = MctsSettings.leaves_per_round
    questions_per_round: int | None = 256
    max_block: int = 4
    block_depth: int = 2
    max_passes: int = 2
    window: tuple[float, float] = (0.65, 1.25)
    dense_max_block: int = 1
    dense_programs: tuple[str, ...] = ()
    output_dir: str = "results/search/run"
    scheduling: str = "fcfs"
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.dense_max_block < 0:
            raise ValueError(f"dense_max_block must be >= 0, got {self.dense_max_block}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.questions_per_level < 1 or self.max_tokens < 1:
            raise ValueError("questions_per_level and max_tokens must be >= 1")
        if len(self.window) != 2:
            raise ValueError(f"window must be [min_fraction, max_fraction], got {self.window}")
        if self.scheduling not in SCHEDULING_POLICIES:
            raise ValueError(
                f"scheduling must be one of {SCHEDULING_POLICIES}, got {self.scheduling!r}"
            )
        if self.split is not None:
            if len(self.split) != 3 or min(self.split) < 0:
                raise ValueError(f"split must be [train, val, test] sizes >= 0, got {self.split}")
            if self.data_file is not None or self.families:
                raise ValueError(
                    "split applies to the story generator's questions; drop it, data_file "
                    "or families"
                )
            object.__setattr__(self, "split", tuple(int(x) for x in self.split))
        if self.split_part not in SPLIT_PARTS:
            raise ValueError(f"split_part must be one of {SPLIT_PARTS}, got {self.split_part!r}")
        if self.families and self.data_file is not None:
            raise ValueError("families and data_file are two sources of questions; keep one")
        unknown = sorted(set(self.families) - set(WORDING_FAMILIES))
        if unknown:
            raise ValueError(f"unknown wording families {unknown}; known: {WORDING_FAMILIES}")
        object.__setattr__(self, "families", tuple(self.families))
        object.__setattr__(self, "levels", tuple(self.levels))
        object.__setattr__(self, "dense_programs", tuple(self.dense_programs))
        object.__setattr__(self, "window", tuple(float(x) for x in self.window))
        length_window(1, *self.window)  # validates the fractions
        self.mcts_settings()  # validates the search parameters

    @property
    def output_path(self) -> Path:
        """The output directory."""
        return Path(self.output_dir)

    @property
    def evaluations_path(self) -> Path:
        """The resumable JSONL record of every evaluation."""
        return self.output_path / "evaluations.jsonl"

    @property
    def labels_path(self) -> Path:
        """The per-question label file."""
        return self.output_path / "labels.jsonl"

    @property
    def study_dir(self) -> Path:
        """Where the oracle study JSON and PNG go."""
        return self.output_path / "study"

    def mcts_settings(self) -> MctsSettings:
        """The MCTS parameters of this run."""
        return MctsSettings(
            simulations=self.simulations,
            layer_cost=self.layer_cost,
            exploration=self.exploration,
            random_expand=self.random_expand,
            leaves_per_round=self.leaves_per_round,
        )

    def engine_args(self) -> dict[str, Any]:
        """The vLLM ``LLM`` arguments and PoLar settings of the ``vllm`` back end."""
        args: dict[str, Any] = {"max_model_len": self.max_model_len}
        if self.max_num_seqs is not None:
            args["max_num_seqs"] = self.max_num_seqs
        if self.max_num_batched_tokens is not None:
            args["max_num_batched_tokens"] = self.max_num_batched_tokens
        return args

    def polar_settings(self) -> dict[str, Any]:
        """``additional_config["polar"]`` of the ``vllm`` back end."""
        return {"max_passes": self.max_passes, "scheduling": self.scheduling}

    def dense_candidates(self, depth: int) -> tuple[Program, ...]:
        """The candidate set of a ``dense`` run on a model of ``depth`` layers."""
        extra = [parse_program(text, depth, self.max_passes) for text in self.dense_programs]
        return candidate_programs(self.action_space(depth), self.dense_max_block, extra)

    def action_space(self, depth: int) -> ActionSpace:
        """The legal moves for a model of ``depth`` layers."""
        min_length, max_length = length_window(depth, *self.window)
        return ActionSpace(
            depth=depth,
            min_length=min_length,
            max_length=min(max_length, self.max_passes * depth),
            max_block=self.max_block,
            block_depth=self.block_depth,
            max_passes=self.max_passes,
        )

    def store_meta(self) -> dict[str, Any]:
        """The settings every stored evaluation depends on (checked when a run resumes)."""
        return {
            "model": self.model,
            "backend": self.backend,
            "dtype": self.dtype,
            "chat_template": self.chat_template,
            "system_prompt": SYSTEM_PROMPT,
            "max_tokens": self.max_tokens,
        }


def load_search_config(path: str | os.PathLike[str]) -> SearchConfig:
    """Read a :class:`SearchConfig` from YAML; unknown keys raise ``ValueError``."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    where = str(path)
    raw = check_mapping(raw, where, kind="a mapping of settings")
    return record_from_mapping(SearchConfig, raw, where, required=("model",), noun="settings")
