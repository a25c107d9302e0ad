"""Evaluation of a predictor against baselines, always by running the programs.

Methods, each generating answers through a :class:`~polar_vllm.search.generation.ProgramGenerator`:

* ``greedy_full``: the full program, greedy;
* ``sampling``: the full program sampled at each temperature of a grid, ``samples`` answers
  per question (pass@1 is the mean correctness of the samples, pass@5 whether any of the
  first 5 is right); the temperature with the best in-distribution pass@1 is reported;
* ``static_skip``: one fixed program dropping the least important layers (ShortGPT style,
  :mod:`polar_vllm.predictor.static_skip`), greedy; further named fixed programs (such as the
  best static program chosen on dense training labels) run the same way;
* ``polar``: the predictor's ranked programs, greedy; pass@1 runs the top program, pass@5 is
  right when any of the top 5 is; further named predictor variants (a candidate predictor at
  other operating points) run the same way.

Greedy methods are deterministic, so their pass@5 equals their pass@1. ``avg_layers`` is the
mean number of executed layers of the program behind pass@1. Results are grouped per
difficulty level, with held-out (out-of-distribution) levels and files reported apart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from polar_vllm.data import MathProblem, answers_match, build_prompt, extract_answer
from polar_vllm.predictor.predict import predict_scored
from polar_vllm.predictor.storage import Predictor
from polar_vllm.program import Program, format_program, full_program
from polar_vllm.search.generation import GenerationRequest, ProgramGenerator

__all__ = [
    "EvalItem",
    "MethodResult",
    "evaluate",
    "plot_frontier",
    "plot_results",
    "summarize",
    "write_results",
]

PASS_K = 5


@dataclass(frozen=True)
class EvalItem:
    """A problem to evaluate and the group it is reported in (e.g. ``"level 2"``)."""

    problem: MathProblem
    group: str
    ood: bool = False


@dataclass
class MethodResult:
    """One method's attempts on one problem: correctness per attempt and programs' lengths."""

    correct: list[bool]
    layers: list[int]
    programs: list[str]
    samples: bool = False

    @property
    def pass1(self) -> float:
        """pass@1: the first attempt, or the mean over samples for a sampling method."""
        if self.samples:
            return sum(self.correct) / len(self.correct)
        return float(self.correct[0])

    @property
    def pass5(self) -> float:
        """pass@5: any of the first 5 attempts (a single greedy attempt counts alone)."""
        return float(any(self.correct[:PASS_K]))


class _RequestCache:
    """Runs each distinct request through the generator once (methods share requests)."""

    def __init__(self, generator: ProgramGenerator) -> None:
        self.generator = generator
        self.texts: dict[GenerationRequest, str] = {}

    def run(self, requests: Sequence[GenerationRequest]) -> list[str]:
        todo = list(dict.fromkeys(r for r in requests if r not in self.texts))
        for request, text in zip(todo, self.generator.generate(todo), strict=True):
            self.texts[request] = text
        return [self.texts[r] for r in requests]


def _score(
    cache: _RequestCache,
    items: Sequence[EvalItem],
    attempts: Sequence[Sequence[GenerationRequest]],
    samples: bool = False,
) -> list[MethodResult]:
    """Run every problem's attempts (in one batch) and score them."""
    flat = [request for row in attempts for request in row]
    texts = iter(cache.run(flat))
    results = []
    for item, row in zip(items, attempts, strict=True):
        answers = [next(texts) for _ in row]
        results.append(
            MethodResult(
                correct=[answers_match(extract_answer(a), item.problem.answer) for a in answers],
                layers=[len(r.program) for r in row],
                programs=[format_program(r.program) for r in row],
                samples=samples,
            )
        )
    return results


def evaluate(
    generator: ProgramGenerator,
    tokenizer: Any,
    predictor: Predictor,
    items: Sequence[EvalItem],
    *,
    max_tokens: int = 16,
    top_k: int = PASS_K,
    length_aware: bool = False,
    temperatures: Sequence[float] = (),
    samples: int = PASS_K,
    static_program: Program | None = None,
    static_programs: Mapping[str, Program] | None = None,
    variants: Mapping[str, Predictor] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run every method on ``items``; returns per-method, per-group metrics and per-item records.

    ``tokenizer`` builds the chat prompts (:func:`polar_vllm.data.build_prompt`); the predictor
    reads the bare question. ``static_program`` is the ``static_skip`` method;
    ``static_programs`` and ``variants`` add fixed programs and predictors under their names.
    """
    depth = generator.depth
    prompts = [build_prompt(item.problem.question, tokenizer) for item in items]
    cache = _RequestCache(generator)

    def greedy(programs: Sequence[Sequence[Program]]) -> list[list[GenerationRequest]]:
        return [
            [GenerationRequest(prompt, tuple(p), max_tokens) for p in row]
            for prompt, row in zip(prompts, programs, strict=True)
        ]

    full = full_program(depth)
    per_method: dict[str, list[MethodResult]] = {
        "greedy_full": _score(cache, items, greedy([[full]] * len(items)))
    }
    fixed = {"static_skip": static_program} if static_program is not None else {}
    for name, program in {**fixed, **(static_programs or {})}.items():
        per_method[name] = _score(cache, items, greedy([[program]] * len(items)))
    questions = [item.problem.question for item in items]
    for name, model in {"polar": predictor, **(variants or {})}.items():
        ranked = predict_scored(model, questions, top_k=top_k, length_aware=length_aware)
        per_method[name] = _score(cache, items, greedy([[s.program for s in r] for r in ranked]))
    grid: dict[str, dict[str, Any]] = {}
    sampled: dict[float, list[MethodResult]] = {}
    for temperature in temperatures:
        attempts = [
            [
                GenerationRequest(prompt, full, max_tokens, temperature, seed + s)
                for s in range(samples)
            ]
            for prompt in prompts
        ]
        sampled[temperature] = _score(cache, items, attempts, samples=True)
        grid[str(temperature)] = summarize(items, {"sampling": sampled[temperature]})
    best_temperature = None
    if sampled:
        best_temperature = max(
            sampled, key=lambda t: grid[str(t)]["in_distribution"]["sampling"]["pass@1"]
        )
        per_method["sampling"] = sampled[best_temperature]
    return {
        "depth": depth,
        "groups": summarize(items, per_method),
        "best_temperature": best_temperature,
        "sampling_grid": grid,
        "items": [
            {
                "id": item.problem.id,
                "group": item.group,
                "answer": item.problem.answer,
                **{name: asdict(results[i]) for name, results in per_method.items()},
            }
            for i, item in enumerate(items)
        ],
    }


def summarize(
    items: Sequence[EvalItem], per_method: dict[str, list[MethodResult]]
) -> dict[str, dict[str, dict[str, float]]]:
    """Metrics per group (each group, ``in_distribution`` and ``ood``) and per method."""
    groups: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(item.group, []).append(index)
        groups.setdefault("ood" if item.ood else "in_distribution", []).append(index)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for group, indices in groups.items():
        out[group] = {}
        for name, results in per_method.items():
            chosen = [results[i] for i in indices]
            out[group][name] = {
                "n": len(chosen),
                "pass@1": sum(r.pass1 for r in chosen) / len(chosen),
                f"pass@{PASS_K}": sum(r.pass5 for r in chosen) / len(chosen),
                "avg_layers": sum(r.layers[0] for r in chosen) / len(chosen),
            }
    return out


def plot_results(results: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Bar charts of pass@1 and average executed layers per group and method, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = results["groups"]
    names = list(groups)
    methods = list(next(iter(groups.values())))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / len(methods)
    for m, method in enumerate(methods):
        xs = [g + m * width for g in range(len(names))]
        axes[0].bar(xs, [groups[n][method]["pass@1"] for n in names], width, label=method)
        axes[1].bar(xs, [groups[n][method]["avg_layers"] for n in names], width, label=method)
    for ax, label in zip(axes, ("pass@1", "executed layers (mean)"), strict=True):
        ax.set_xticks([g + 0.4 - width / 2 for g in range(len(names))], names, rotation=30)
        ax.set_ylabel(label)
    axes[0].set_ylim(0, 1)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(Path(path), dpi=120)
    plt.close(fig)


def plot_frontier(results: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Pass@1 against mean executed layers on the in-distribution questions, as PNG: the
    predictor's operating points (``frontier@i`` joined by a line, named points labelled),
    every baseline as a marker, and the oracle of the searched test questions if any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    group = results["groups"]["in_distribution"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    frontier = sorted(
        (row["avg_layers"], row["pass@1"]) for name, row in group.items() if "frontier@" in name
    )
    if frontier:
        ax.plot(*zip(*frontier, strict=True), marker=".", color="tab:blue", label="PoLar frontier")
    for name, row in group.items():
        if "frontier@" in name:
            continue
        polar = name.startswith("polar")
        ax.scatter(
            row["avg_layers"], row["pass@1"], marker="*" if polar else "o", s=90 if polar else 45
        )
        ax.annotate(name, (row["avg_layers"], row["pass@1"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)  # fmt: skip
    oracle = results.get("oracle")
    if oracle:  # measured on a subset of the test questions: labelled with its size
        ax.scatter(oracle["avg_layers"], oracle["pass@1"], marker="P", s=90, color="black")
        ax.annotate(f"oracle ({oracle['questions']} searched test q)",
                    (oracle["avg_layers"], oracle["pass@1"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)  # fmt: skip
    ax.axvline(results["depth"], color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("mean executed layers")
    ax.set_ylabel("pass@1 (test questions)")
    ax.set_title(f"{results.get('model', '')}: accuracy against executed layers")
    if frontier:
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(Path(path), dpi=120)
    plt.close(fig)


def write_results(results: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``results`` as JSON to ``path`` and the plots next to it (``.png`` and
    ``_frontier.png``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    plot_results(results, path.with_suffix(".png"))
    plot_frontier(results, path.with_name(path.stem + "_frontier.png"))
    return path
