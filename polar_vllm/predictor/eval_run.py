"""``polar-vllm eval``: build the test set, the generator and the baselines, then evaluate."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polar_vllm.data import build_prompt, generate_problems, load_jsonl, split_problems
from polar_vllm.data.wordings import generate_family
from polar_vllm.models.bundled import resolve_model
from polar_vllm.predictor.candidate_training import (
    FRONTIER_FILE,
    candidate_set_of,
    dense_matrix,
)
from polar_vllm.predictor.errors import PredictorError
from polar_vllm.predictor.evaluation import EvalItem, evaluate, write_results
from polar_vllm.predictor.familiarity import embed_questions
from polar_vllm.predictor.labels import read_labels
from polar_vllm.predictor.oracle import oracle_summary
from polar_vllm.predictor.run_settings import EvalSettings, RunSettings
from polar_vllm.predictor.selection import OperatingPoint
from polar_vllm.predictor.static_skip import layer_importance, static_skip_program
from polar_vllm.predictor.storage import Predictor, load_predictor
from polar_vllm.program import Program, format_program
from polar_vllm.search.generation import ProgramGenerator

__all__ = [
    "best_static_programs",
    "build_items",
    "compared_predictors",
    "frontier_variants",
    "gate_fires",
    "run_eval",
    "vllm_generator",
]


def build_items(settings: EvalSettings) -> tuple[list[EvalItem], list[str]]:
    """Test problems (per level, held-out levels, files and wording families) and calibration
    questions.

    Generated problems of each level are split with ``settings.split`` and ``data_seed``; the
    test part is evaluated (``count_per_level`` of them) and the training part of the
    in-distribution levels gives the calibration questions. Questions found in
    ``exclude_labels`` are left out.
    """
    excluded = {r.question for r in read_labels(settings.exclude_labels)}
    items: list[EvalItem] = []
    calibration: list[str] = []
    train, val, test = settings.split
    for level in (*settings.levels, *settings.ood_levels):
        ood = level in settings.ood_levels
        problems = generate_problems(level, train + val + test, settings.data_seed)
        parts = split_problems(problems, train, val, test, seed=settings.data_seed)
        chosen = [p for p in parts.test if p.question not in excluded][: settings.count_per_level]
        group = f"ood level {level}" if ood else f"level {level}"
        items.extend(EvalItem(p, group, ood) for p in chosen)
        if not ood:
            calibration.extend(p.question for p in parts.train[: settings.calibration_questions])
    for path in settings.ood_files:
        problems = load_jsonl(path, limit=settings.count_per_level, skip_non_numeric=True)
        items.extend(EvalItem(p, f"ood {Path(path).name.split('.')[0]}", True) for p in problems)
    for families, ood in ((settings.families, False), (settings.ood_families, True)):
        for family in families:
            problems = [
                p
                for level in settings.levels
                for p in generate_family(
                    family, level, settings.family_count_per_level * 2, settings.family_seed
                )
                if p.question not in excluded
            ]
            per_level = [
                [p for p in problems if p.level == level][: settings.family_count_per_level]
                for level in settings.levels
            ]
            group = f"{'ood ' if ood else ''}family {family}"
            items.extend(EvalItem(p, group, ood) for row in per_level for p in row)
    step = max(1, len(calibration) // max(settings.calibration_questions, 1))
    return items, calibration[::step][: settings.calibration_questions]


def best_static_programs(
    dense_labels: Sequence[str], depth: int, layer_budget: float
) -> dict[str, Program]:
    """The candidates of dense label files right most often (ties: fewer layers): overall as
    ``best_static`` and within ``layer_budget`` layers as ``best_static_short``."""
    records = read_labels(dense_labels)
    programs = candidate_set_of(records)
    rates = dense_matrix(records, programs).mean(dim=0).tolist()
    if records[0].depth != depth:
        raise PredictorError(f"dense labels are for depth {records[0].depth}, not {depth}")

    def best(indices: list[int]) -> Program:
        return programs[max(indices, key=lambda c: (rates[c], -len(programs[c])))]

    out = {"best_static": best(list(range(len(programs))))}
    short = [c for c in range(len(programs)) if len(programs[c]) <= layer_budget + 1e-9]
    if short:
        out["best_static_short"] = best(short)
    return out


def frontier_variants(predictor: Predictor, directory: str, count: int) -> dict[str, Predictor]:
    """The candidate predictor at its named operating points (``polar@name``, the default one
    excepted, which is ``polar``) and at ``count`` points spread over its validation frontier
    (``frontier@i``, fewest layers first)."""
    if predictor.candidates is None:
        return {}
    config = predictor.config
    out = {
        f"polar@{name}": predictor.with_point(OperatingPoint(**point))
        for name, point in config.operating_points.items()
        if name != config.operating_point
    }
    path = Path(directory) / FRONTIER_FILE
    if count > 0 and path.is_file():
        frontier = json.loads(path.read_text())["frontier"]
        step = max(1, len(frontier) // count)
        for i, row in enumerate(frontier[::step][:count]):
            point = OperatingPoint(row["length_penalty"], row["margin"])
            out[f"frontier@{i}"] = predictor.with_point(point)
    return out


def compared_predictors(directories: Sequence[str], depth: int, model: str) -> dict[str, Predictor]:
    """The predictors to run beside the evaluated one, as ``polar[<directory name>]``."""
    return {
        f"polar[{Path(directory).name}]": load_predictor(
            directory, expected_depth=depth, expected_model=model
        )
        for directory in directories
    }


def gate_fires(predictor: Predictor, items: Sequence[EvalItem]) -> dict[str, float]:
    """Per group of ``items``, the share of questions the predictor's familiarity guard sends
    to its fallback program (at every operating point it applies to)."""
    embeddings = embed_questions(predictor.encoder, [item.problem.question for item in items])
    unfamiliar = (~predictor.guard.familiar(embeddings)).tolist()
    groups: dict[str, list[bool]] = {}
    for item, fires in zip(items, unfamiliar, strict=True):
        groups.setdefault(item.group, []).append(fires)
        groups.setdefault("ood" if item.ood else "in_distribution", []).append(fires)
    return {group: sum(flags) / len(flags) for group, flags in groups.items()}


def vllm_generator(model_dir: str, dtype: str) -> ProgramGenerator:
    """A PoLar-enabled vLLM engine on ``model_dir`` behind a program generator."""
    from polar_vllm.compat.batch_jobs import batch_job_llm
    from polar_vllm.search.generation import VllmProgramGenerator

    return VllmProgramGenerator(batch_job_llm(model_dir, dtype), use_tqdm=True)


def run_eval(settings: RunSettings) -> dict[str, Any]:
    """Evaluate ``settings.predictor_dir`` as ``settings.eval`` says; writes JSON + PNG."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    options = settings.eval
    model_dir = resolve_model(settings.model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    depth = int(model.config.num_hidden_layers)
    predictor = load_predictor(
        settings.predictor_dir, expected_depth=depth, expected_model=settings.model
    )
    compared = compared_predictors(options.compare_predictors, depth, settings.model)
    items, calibration = build_items(options)
    static_program = None
    importance: list[float] = []
    if options.static_skip_layers:
        prompts = [build_prompt(q, tokenizer) for q in calibration]
        importance = layer_importance(model, tokenizer, prompts)
        static_program = static_skip_program(importance, options.static_skip_layers)
    static_programs = (
        best_static_programs(options.dense_labels, depth, options.efficiency_layers * depth)
        if options.dense_labels
        else {}
    )
    generator: ProgramGenerator
    if options.backend == "vllm":
        del model
        generator = vllm_generator(model_dir, options.dtype)
    else:
        from polar_vllm.search.generation import ReferenceProgramGenerator

        generator = ReferenceProgramGenerator(model, tokenizer)
    results = evaluate(
        generator,
        tokenizer,
        predictor,
        items,
        max_tokens=options.max_tokens,
        top_k=options.top_k,
        length_aware=options.length_aware,
        temperatures=options.temperatures,
        samples=options.samples,
        static_program=static_program,
        static_programs=static_programs,
        variants={
            **frontier_variants(predictor, settings.predictor_dir, options.frontier_points),
            **compared,
        },
        seed=options.data_seed,
    )
    results = {
        "model": settings.model,
        "predictor": Path(settings.predictor_dir).name,
        "backend": options.backend,
        "static_skip": {
            "dropped_layers": sorted(set(range(depth)) - set(static_program or range(depth))),
            "importance": importance,
        },
        "static_programs": {name: format_program(p) for name, p in static_programs.items()},
        **results,
    }
    if predictor.guard is not None:
        results["gate_fires"] = gate_fires(predictor, items)
    if options.oracle_labels:
        oracle_records = read_labels(options.oracle_labels)
        results["oracle"] = oracle_summary(oracle_records, results["items"], depth)
    write_results(results, options.output)
    return results
