"""How much served speed a candidate predictor can buy at a given accuracy: its validation
frontier in layer-tokens, against the requests/s goals of the payoff benchmark.

A served request costs layer-tokens (:mod:`~polar_vllm.predictor.served_cost`): its
program's layers times its tokens, plus the LM head once per generated token. So what a
program saves depends on the answer it makes the model write as well as on its layers: a
program that skips layers but makes the model ramble to ``max_tokens`` can cost more than
the full program.

The dense validation labels of a predictor run config (``train.val_labels``) hold, for every
validation question, the answer text of every candidate program (``evaluations.jsonl`` beside
each label file), so every operating point of the calibration grid can be costed by lookup,
nothing run: its accuracy, mean executed layers, and layer-tokens relative to stock greedy's
on the same questions (prompt tokens from the chat template, answer tokens re-tokenized from the
stored text, plus the end of sequence unless the answer hit ``max_tokens``). These are the
head's choices at each point, without the familiarity guard.

A served ratio to stock is the ideal ratio (stock's layer-tokens over the variant's) times the
share of the ideal the engine keeps, measured by ``predictor_payoff.py`` (``--payoff``). A
requests/s goal ``g`` at a point whose engine keeps ``s`` therefore needs relative layer-tokens
of at most ``s / g``; the script reports the most accurate grid point within that budget,
beside greedy's validation accuracy, and the best ratio any point as accurate as greedy allows
(the cheapest such point's layer-tokens), also for the same head had it known every answer's
cost in advance (its length penalty charging each candidate's layer-tokens on the question
instead of its layers): whether choosing on answer lengths could move the bound. Writes
``benchmarks/results/predictor_payoff/payoff_bound_<tag>.json`` and ``.png``.

    python benchmarks/payoff_bound.py --config configs/predictor/qwen.yaml --tag cpu_qwen
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from harness import machine_record, write_result

from polar_vllm.predictor import load_predictor
from polar_vllm.predictor.candidate_training import dense_matrix, head_outputs
from polar_vllm.predictor.labels import read_labels
from polar_vllm.predictor.run_settings import load_settings
from polar_vllm.predictor.selection import grid_choices
from polar_vllm.predictor.served_cost import candidate_costs, pricing

RESULTS = Path(__file__).resolve().parent / "results" / "predictor_payoff"
DEFAULT_GOALS = "efficiency=1.1,accuracy=0.95"


def costed_grid(
    probs: torch.Tensor,
    correct: torch.Tensor,
    cost: torch.Tensor,
    lengths: torch.Tensor,
    depth: int,
    full_index: int,
    at_max: torch.Tensor,
    charged: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    """Accuracy, mean layers, layer-tokens relative to the full program's and the share of
    answers that ran to ``max_tokens`` of every grid point; ``cost`` [Q, C] holds each
    candidate's layer-tokens on each question, ``at_max`` [Q, C] whether its answer ran to
    ``max_tokens``. The length penalty charges ``charged`` ([Q, C], in layers), by default
    the candidates' layers."""
    rows = torch.arange(probs.shape[0])
    stock = float(cost[:, full_index].sum())
    charged = lengths if charged is None else charged
    grid = []
    for point, chosen in grid_choices(probs, charged, depth, full_index):
        grid.append(
            {
                **asdict(point),
                "accuracy": float(correct[rows, chosen].mean()),
                "mean_layers": float(lengths[chosen].float().mean()),
                "relative_cost": float(cost[rows, chosen].sum()) / stock,
                "at_max_tokens": float(at_max[rows, chosen].float().mean()),
                "right_at_max_tokens": float(correct[rows, chosen][at_max[rows, chosen]].sum()),
            }
        )
    return grid


def frontier(grid: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The grid points no other point beats on both accuracy and cost, by cost."""
    out: list[dict[str, Any]] = []
    for row in sorted(grid, key=lambda r: (r["relative_cost"], -r["accuracy"])):
        if not out or row["accuracy"] > out[-1]["accuracy"]:
            out.append(row)
    return out


def _cheapest_at(grid: list[dict[str, Any]], accuracy: float) -> dict[str, Any]:
    """The cheapest grid point at least ``accuracy`` accurate."""
    return min((r for r in grid if r["accuracy"] >= accuracy), key=lambda r: r["relative_cost"])


def plot(results: dict[str, Any], path: Path) -> None:
    """Validation accuracy against relative layer-tokens: grid, frontier, points, goals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    grid = results["grid"]
    ax.scatter(
        [r["relative_cost"] for r in grid], [r["accuracy"] for r in grid], s=6, color="lightgrey"
    )
    line = results["frontier"]
    ax.plot([r["relative_cost"] for r in line], [r["accuracy"] for r in line], label="frontier")
    knowing = results["frontier_knowing_costs"]
    ax.plot(
        [r["relative_cost"] for r in knowing],
        [r["accuracy"] for r in knowing],
        linestyle=":",
        label="frontier, answer costs known",
    )
    ax.scatter([1.0], [results["greedy_accuracy"]], color="black", marker="s", label="greedy")
    for name, bound in results["bounds"].items():
        point = bound["operating_point"]
        ax.scatter(
            [point["relative_cost"]], [point["accuracy"]], marker="*", s=120, label=f"{name} point"
        )
        ax.axvline(bound["cost_budget"], linestyle="--", linewidth=0.8, color="grey")
        ax.text(
            bound["cost_budget"],
            0.03,
            f" {bound['goal']}x at {name}",
            rotation=90,
            fontsize=8,
            va="bottom",
            transform=ax.get_xaxis_transform(),  # x in data, y in axes fraction
        )
    ax.set_xlabel("layer-tokens, relative to stock greedy (validation)")
    ax.set_ylabel("pass@1, validation questions")
    ax.set_title(f"{results['model']}: what each accuracy costs served")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Cost the grid on validation, bound the goals, print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="predictor run YAML")
    parser.add_argument(
        "--payoff",
        default=str(RESULTS / "predictor_payoff_cpu_qwen.json"),
        help="a predictor_payoff.py result: the engine's share of the ideal at each point",
    )
    parser.add_argument(
        "--goals", default=DEFAULT_GOALS, help="requests/s goals as point=ratio,point=ratio"
    )
    parser.add_argument("--results-dir", default=str(RESULTS))
    parser.add_argument("--tag", default="cpu")
    args = parser.parse_args(argv)

    settings = load_settings(args.config)
    tokenizer, head = pricing(settings.model)
    predictor = load_predictor(settings.predictor_dir)
    candidates = predictor.candidates
    if candidates is None:
        raise SystemExit(f"{settings.predictor_dir} is not a candidate predictor")
    records = read_labels(settings.train.val_labels)
    priced = candidate_costs(
        records, candidates.programs, settings.train.val_labels, tokenizer, head
    )
    cost, at_max, max_tokens = priced.cost, priced.at_max, priced.max_tokens
    questions = [record.question for record in records]
    probs, _ = head_outputs(predictor, questions)
    correct = dense_matrix(records, candidates.programs)
    depth = predictor.config.depth
    full = candidates.full_index
    grid = costed_grid(probs, correct, cost, candidates.lengths, depth, full, at_max)
    line = frontier(grid)
    greedy = float(correct[:, full].mean())
    # The cheapest way to keep greedy's accuracy: what bounds any point that must keep it.
    cheapest = _cheapest_at(grid, greedy)
    # The same head, had it known every answer's cost in advance: its penalty charges each
    # candidate's layer-tokens on the question (in full-program layers) instead of its layers.
    knowing = costed_grid(
        probs,
        correct,
        cost,
        candidates.lengths,
        depth,
        full,
        at_max,
        charged=depth * cost / cost[:, full : full + 1],
    )
    cheapest_knowing = _cheapest_at(knowing, greedy)

    payoff = json.loads(Path(args.payoff).read_text())
    bounds = {}
    for goal_text in args.goals.split(","):
        name, goal = goal_text.split("=")
        stored = predictor.config.operating_points[name]
        point = next(
            r
            for r in grid
            if (r["length_penalty"], r["margin"]) == (stored["length_penalty"], stored["margin"])
        )
        share = payoff["variants"][f"polar@{name}"]["share_of_ideal"]
        budget = share / float(goal)
        within = [r for r in grid if r["relative_cost"] <= budget]
        bounds[name] = {
            "goal": float(goal),
            "engine_share_of_ideal": share,
            "cost_budget": budget,
            "operating_point": point,
            "expected_ratio": share / point["relative_cost"],
            "best_within_budget": max(within, key=lambda r: r["accuracy"]) if within else None,
            "best_ratio_at_greedy_accuracy": share / cheapest["relative_cost"],
        }
    results = {
        "model": settings.model,
        "predictor": Path(settings.predictor_dir).name,
        "command": "python benchmarks/payoff_bound.py " + " ".join(argv or sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_record(),
        "validation_questions": len(records),
        "max_tokens": max_tokens,
        "head_layers": head,
        "payoff": args.payoff,
        "greedy_accuracy": greedy,
        "cheapest_at_greedy_accuracy": cheapest,
        "cheapest_at_greedy_accuracy_knowing_costs": cheapest_knowing,
        "bounds": bounds,
        "frontier": line,
        "frontier_knowing_costs": frontier(knowing),
        "grid": grid,
    }
    print(
        f"greedy: {100 * greedy:.1f}% on {len(records)} validation questions; the cheapest point "
        f"as accurate costs {cheapest['relative_cost']:.3f} of stock's layer-tokens "
        f"({cheapest_knowing['relative_cost']:.3f} had the head known every answer's cost)"
    )
    for name, bound in bounds.items():
        best = bound["best_within_budget"]
        point = bound["operating_point"]
        print(
            f"{name}: {100 * point['accuracy']:.1f}% at {point['relative_cost']:.3f} of stock's "
            f"layer-tokens, expected {bound['expected_ratio']:.2f}x; {bound['goal']}x needs "
            f"<= {bound['cost_budget']:.3f} (engine keeps {bound['engine_share_of_ideal']:.2f}): "
            + (f"best {100 * best['accuracy']:.1f}% there" if best else "no grid point")
            + f"; at greedy's accuracy at most {bound['best_ratio_at_greedy_accuracy']:.2f}x; "
            f"{100 * point['at_max_tokens']:.0f}% of its answers run to {max_tokens} tokens "
            f"({point['right_at_max_tokens']:.0f} of them right)"
        )
    out = write_result(results, Path(args.results_dir) / f"payoff_bound_{args.tag}.json")
    plot(results, out.with_suffix(".png"))
    return results


if __name__ == "__main__":
    main()
