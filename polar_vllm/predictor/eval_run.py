"""``polar-vllm eval``: build the test set, the generator and the baselines, then evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polar_vllm.bundled import BUNDLED_MODELS, prepare_model
from polar_vllm.data import build_prompt, generate_problems, load_jsonl, split_problems
from polar_vllm.generation import ProgramGenerator
from polar_vllm.predictor.evaluation import EvalItem, evaluate, write_results
from polar_vllm.predictor.labels import read_labels
from polar_vllm.predictor.settings import EvalSettings, RunSettings
from polar_vllm.predictor.static_skip import layer_importance, static_skip_program
from polar_vllm.predictor.storage import load_predictor

__all__ = ["build_items", "model_directory", "run_eval", "vllm_generator"]


def model_directory(model: str) -> str:
    """The directory of ``model``: a bundled model name (prepared on demand) or a path."""
    if model in BUNDLED_MODELS:
        return str(prepare_model(model))
    return model


def build_items(settings: EvalSettings) -> tuple[list[EvalItem], list[str]]:
    """Test problems (per level, held-out levels and files) and calibration questions.

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
    step = max(1, len(calibration) // max(settings.calibration_questions, 1))
    return items, calibration[::step][: settings.calibration_questions]


def vllm_generator(model_dir: str, dtype: str) -> ProgramGenerator:
    """A PoLar-enabled vLLM engine on ``model_dir`` behind a program generator."""
    from polar_vllm.compat.batch_jobs import batch_job_llm
    from polar_vllm.generation import VllmProgramGenerator

    return VllmProgramGenerator(batch_job_llm(model_dir, dtype), use_tqdm=True)


def run_eval(settings: RunSettings) -> dict[str, Any]:
    """Evaluate ``settings.predictor_dir`` as ``settings.eval`` says; writes JSON + PNG."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    options = settings.eval
    model_dir = model_directory(settings.model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    depth = int(model.config.num_hidden_layers)
    predictor = load_predictor(
        settings.predictor_dir, expected_depth=depth, expected_model=settings.model
    )
    items, calibration = build_items(options)
    static_program = None
    importance: list[float] = []
    if options.static_skip_layers:
        prompts = [build_prompt(q, tokenizer) for q in calibration]
        importance = layer_importance(model, tokenizer, prompts)
        static_program = static_skip_program(importance, options.static_skip_layers)
    generator: ProgramGenerator
    if options.backend == "vllm":
        del model
        generator = vllm_generator(model_dir, options.dtype)
    else:
        from polar_vllm.generation import ReferenceProgramGenerator

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
        **results,
    }
    write_results(results, options.output)
    return results
