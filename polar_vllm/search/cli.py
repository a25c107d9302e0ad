"""``polar-vllm search`` and ``polar-vllm study``."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

__all__ = ["add_subcommands", "format_study"]


def _pct(value: float | None) -> str:
    return "   -  " if value is None else f"{100 * value:5.1f}%"


def format_study(study: Mapping[str, Any]) -> str:
    """A text table of the oracle study: accuracies and the shorter/fixed shares per level."""
    lines = [
        f"{'level':>5} {'n':>5} {'base':>6} {'skip':>6} {'loop':>6} {'both':>6} "
        f"{'right+shorter':>13} {'wrong->fixed':>12}"
    ]
    for name, group in [*study["levels"].items(), ("all", study["all"])]:
        oracle = group["oracle_accuracy"]
        lines.append(
            f"{name:>5} {group['questions']:>5} {_pct(group['base_accuracy'])} "
            f"{_pct(oracle['skip_only'])} {_pct(oracle['loop_only'])} "
            f"{_pct(oracle['skip_and_loop'])} {_pct(group['right_with_shorter_program']):>13} "
            f"{_pct(group['wrong_fixed_within_depth']):>12}"
        )
    return "\n".join(lines)


def _cmd_search(args: argparse.Namespace) -> None:
    from polar_vllm.search.backends import open_generator
    from polar_vllm.search.config import load_search_config
    from polar_vllm.search.pipeline import run_search

    config = load_search_config(args.config)
    with open_generator(config) as (generator, tokenizer):
        run = run_search(config, generator, tokenizer, progress=not args.no_progress)
    stats = run.stats
    print(
        f"\n{stats.questions} questions, {config.model} ({config.backend} back end): "
        f"{stats.generated + stats.reused} programs ({stats.generated} evaluated now, "
        f"{stats.reused} from {config.evaluations_path}) in {stats.rounds} rounds, "
        f"{stats.generate_calls} generate calls, {stats.programs_per_second:.2f} programs/s, "
        f"{stats.seconds:.1f} s"
    )
    print(format_study(run.study))
    print(f"labels: {run.labels_path}\nstudy: {run.study_json} {run.study_png}")


def _cmd_study(args: argparse.Namespace) -> None:
    from polar_vllm.search.labels import read_label_records
    from polar_vllm.search.study import write_study

    study, json_path, png_path = write_study(read_label_records(args.labels), args.out)
    print(format_study(study))
    print(f"study: {json_path} {png_path}")


def add_subcommands(commands: Any) -> None:
    """Add ``search`` and ``study`` to the ``polar-vllm`` subparsers ``commands``."""
    search = commands.add_parser(
        "search", help="MCTS program search with batched evaluation; writes labels and the study"
    )
    search.add_argument("--config", required=True, help="search YAML (see configs/search/)")
    search.add_argument("--no-progress", action="store_true", help="no progress bar")
    search.set_defaults(handler=_cmd_search)

    study = commands.add_parser("study", help="oracle study (JSON + PNG) of label files")
    study.add_argument("--labels", nargs="+", required=True, help="label JSONL file(s)")
    study.add_argument("--out", required=True, help="output directory")
    study.set_defaults(handler=_cmd_study)
