"""A whole search run from a :class:`~polar_vllm.search.config.SearchConfig`: questions,
prompts, batched MCTS, the label file and the oracle study."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

from polar_vllm.data import (
    MathProblem,
    build_prompt,
    generate_dataset,
    generate_problems,
    load_jsonl,
    split_problems,
)
from polar_vllm.data.wordings import generate_wordings
from polar_vllm.search.batched import SearchQuestion, SearchStats, search_questions
from polar_vllm.search.config import SearchConfig
from polar_vllm.search.dense import score_questions
from polar_vllm.search.generation import ProgramGenerator
from polar_vllm.search.labels import label_record, write_label_records
from polar_vllm.search.store import EvaluationStore
from polar_vllm.search.study import write_study

__all__ = ["SearchRun", "load_questions", "run_search"]


@dataclass(frozen=True)
class SearchRun:
    """What a finished run produced."""

    records: list[dict[str, Any]]
    stats: SearchStats
    study: dict[str, Any]
    labels_path: Path
    study_json: Path
    study_png: Path


def load_questions(config: SearchConfig) -> list[MathProblem]:
    """``questions_per_level`` problems of each level in ``config.levels``.

    Generated (seeded by ``data_seed``) by the story generator, or by the wording families
    of ``families`` (:func:`polar_vllm.data.wordings.generate_wordings`, every family in turn),
    unless ``data_file`` names a JSONL file, from which the first problems of each level are
    taken in turn (fewer if the file has fewer; up to ``questions_per_level`` questions
    without a level too). With ``split``, the
    generated problems are first cut into train/val/test parts as the predictor pipeline cuts
    them, and the first problems of each level of ``split_part`` are searched (taken in turn
    from each level), so a search of the train part never touches validation or test
    questions.
    """
    if config.split is not None:
        splits = split_problems(
            generate_dataset(config.levels, sum(config.split), config.data_seed),
            *config.split,
            seed=config.data_seed,
        )
        part = getattr(splits, config.split_part)
        if any(
            sum(p.level == level for p in part) < config.questions_per_level
            for level in config.levels
        ):
            raise ValueError(
                f"split part {config.split_part!r} of {config.split} holds fewer than "
                f"questions_per_level={config.questions_per_level} problems per level"
            )
        per_level = [
            [p for p in part if p.level == level][: config.questions_per_level]
            for level in config.levels
        ]
        # round-robin over levels: a run stopped early has covered every level alike
        return [problem for row in zip(*per_level, strict=True) for problem in row]
    if config.families:
        return generate_wordings(
            config.families, config.levels, config.questions_per_level, config.data_seed
        )
    if config.data_file is None:
        return [
            p
            for level in config.levels
            for p in generate_problems(level, config.questions_per_level, config.data_seed)
        ]
    problems = load_jsonl(config.data_file, skip_non_numeric=True)
    per_level = [
        [p for p in problems if p.level == level][: config.questions_per_level]
        for level in (*config.levels, None)  # a question without a level is always taken
    ]
    # in turn from each level, as above
    return [p for row in zip_longest(*per_level) for p in row if p is not None]


def run_search(
    config: SearchConfig, generator: ProgramGenerator, tokenizer: Any, *, progress: bool = True
) -> SearchRun:
    """Search every question of ``config`` (MCTS, or the dense candidate set when
    ``config.method`` is ``"dense"``), resuming from its evaluation file, then write the labels
    and the oracle study under ``config.output_dir``."""
    problems = load_questions(config)
    if not problems:
        raise ValueError(f"no questions for levels {config.levels}")
    prompt_tokenizer = tokenizer if config.chat_template else None
    questions = [SearchQuestion(p, build_prompt(p.question, prompt_tokenizer)) for p in problems]
    store = EvaluationStore(config.evaluations_path, config.store_meta())
    space = config.action_space(generator.depth)
    if config.method == "dense":
        results, stats = score_questions(
            questions,
            generator,
            config.dense_candidates(generator.depth),
            store,
            max_tokens=config.max_tokens,
            questions_per_call=config.questions_per_round or len(questions),
            progress=progress,
        )
    else:
        results, stats = search_questions(
            questions,
            generator,
            space,
            config.mcts_settings(),
            store,
            max_tokens=config.max_tokens,
            seed=config.seed,
            questions_per_round=config.questions_per_round,
            progress=progress,
        )
    records = [label_record(r, config.model, generator.depth) for r in results]
    write_label_records(records, config.labels_path)
    study, study_json, study_png = write_study(records, config.study_dir)
    return SearchRun(records, stats, study, config.labels_path, study_json, study_png)
