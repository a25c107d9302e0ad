"""The predictor subcommands: ``train``, ``fit-guard``, ``eval`` and ``predict``."""

from __future__ import annotations

import argparse
import json
from typing import Any


def _cmd_train(args: argparse.Namespace) -> None:
    from polar_vllm.predictor.run_settings import load_settings
    from polar_vllm.predictor.training import train_from_settings

    settings = load_settings(args.config)
    output = args.output or settings.predictor_dir
    result = train_from_settings(settings, output)
    print(
        json.dumps(
            {
                "predictor": str(output),
                "best_epoch": result.best_epoch,
                "best_val_loss": result.best_val_loss,
            }
        )
    )


def _cmd_fit_guard(args: argparse.Namespace) -> None:
    from polar_vllm.predictor.candidate_training import fit_familiarity_guard
    from polar_vllm.predictor.run_settings import load_settings

    settings = load_settings(args.config)
    output = args.output or settings.predictor_dir
    guard = fit_familiarity_guard(settings, output)
    record = None if guard is None else {"threshold": guard.threshold, "quantile": guard.quantile}
    print(json.dumps({"predictor": str(output), "familiarity_guard": record}))


def _cmd_eval(args: argparse.Namespace) -> None:
    from polar_vllm.predictor.eval_run import run_eval
    from polar_vllm.predictor.run_settings import load_settings

    results = run_eval(load_settings(args.config))
    print(json.dumps(results["groups"], indent=1))


def _cmd_predict(args: argparse.Namespace) -> None:
    from polar_vllm.predictor.predict import predict_scored
    from polar_vllm.predictor.storage import load_predictor
    from polar_vllm.program import format_program

    predictor = load_predictor(args.predictor)
    ranked = predict_scored(
        predictor, [args.question], top_k=args.top_k, length_aware=args.length_aware
    )[0]
    for rank, item in enumerate(ranked, start=1):
        program = item.program
        print(
            f"{rank}. {format_program(program) or '(empty)'}  "
            f"[{len(program)}/{predictor.config.depth} layers, score {item.score:.3f}]"
        )


def add_subcommands(commands: Any) -> None:
    """Add the predictor's subcommands to the ``polar-vllm`` argparse subparsers."""
    train = commands.add_parser("train", help="train a PoLar predictor from search labels")
    train.add_argument("--config", required=True, help="run YAML (configs/predictor/*.yaml)")
    train.add_argument("--output", help="predictor directory (default: predictor_dir)")
    train.set_defaults(handler=_cmd_train)

    guard = commands.add_parser(
        "fit-guard",
        help="fit a trained candidate predictor's familiarity guard (train does it too)",
    )
    guard.add_argument("--config", required=True, help="run YAML (configs/predictor/*.yaml)")
    guard.add_argument("--output", help="predictor directory (default: predictor_dir)")
    guard.set_defaults(handler=_cmd_fit_guard)

    evaluate = commands.add_parser(
        "eval", help="evaluate a predictor against greedy, sampling and static skip"
    )
    evaluate.add_argument("--config", required=True, help="run YAML (configs/predictor/*.yaml)")
    evaluate.set_defaults(handler=_cmd_eval)

    predict = commands.add_parser("predict", help="print the predicted programs for a question")
    predict.add_argument("--predictor", required=True, help="predictor directory")
    predict.add_argument("--question", required=True)
    predict.add_argument("--top-k", type=int, default=5)
    predict.add_argument(
        "--length-aware", action="store_true", help="prefer fewer executed layers at equal score"
    )
    predict.set_defaults(handler=_cmd_predict)
