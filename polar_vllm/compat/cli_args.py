"""``--polar``, ``--polar-predictor`` and ``--polar-operating-point`` for ``vllm serve``
(vLLM 0.32).

:func:`add_polar_arguments` patches vLLM's serve-argument module (``make_arg_parser`` and
``validate_parsed_serve_args``) as soon as it is imported (see :mod:`polar_vllm.compat.cli_hook`):
the flags are added to the parser, and after parsing they are folded into
``--additional-config`` as ``{"polar": {...}}``, which is all the engine reads.
"""

from __future__ import annotations

import argparse
import functools
import json
from types import ModuleType
from typing import Any

from polar_vllm.engine.config import POLAR_CONFIG_KEY

__all__ = ["add_polar_arguments", "apply_polar_arguments"]


def _add_flags(parser: Any) -> Any:
    group = parser.add_argument_group("PoLar", "per-request layer programs (polar-vllm)")
    group.add_argument(
        "--polar",
        action="store_true",
        default=False,
        help="Turn PoLar on: requests may carry vllm_xargs.polar_program; others run the "
        "full program (or the predictor's program with --polar-predictor).",
    )
    group.add_argument(
        "--polar-predictor",
        default=None,
        metavar="DIR",
        help="PoLar predictor directory or shipped predictor name; implies --polar. Requests "
        "without their own program run the program it predicts from the prompt.",
    )
    group.add_argument(
        "--polar-operating-point",
        default=None,
        metavar="NAME",
        help="Operating point of a candidate predictor (how it trades accuracy for executed "
        "layers, e.g. 'accuracy' or 'efficiency'); needs --polar-predictor.",
    )
    return parser


def apply_polar_arguments(args: argparse.Namespace) -> None:
    """Fold ``--polar`` / ``--polar-predictor`` / ``--polar-operating-point`` into
    ``args.additional_config``.

    Raises:
        SystemExit: the predictor is neither a directory nor a shipped predictor's name, or an
            operating point is given without a predictor (the server refuses to start).
    """
    predictor = getattr(args, "polar_predictor", None)
    operating_point = getattr(args, "polar_operating_point", None)
    if operating_point is not None and predictor is None:
        raise SystemExit("--polar-operating-point needs --polar-predictor")
    if not getattr(args, "polar", False) and predictor is None:
        return
    additional = args.additional_config or {}
    if isinstance(additional, str):
        additional = json.loads(additional)
    settings = dict(additional.get(POLAR_CONFIG_KEY) or {})
    if predictor is not None:
        from polar_vllm.predictor.errors import PredictorError
        from polar_vllm.predictor.shipped import resolve_predictor_dir

        try:
            settings["predictor"] = str(resolve_predictor_dir(predictor).resolve())
        except PredictorError as error:
            raise SystemExit(f"--polar-predictor: {error}") from None
    if operating_point is not None:
        settings["operating_point"] = operating_point
    args.additional_config = {**additional, POLAR_CONFIG_KEY: settings}


def add_polar_arguments(cli_args_module: ModuleType) -> None:
    """Patch vLLM's serve-argument module to accept and apply the PoLar flags."""
    make_arg_parser = cli_args_module.make_arg_parser
    validate = cli_args_module.validate_parsed_serve_args

    @functools.wraps(make_arg_parser)
    def make_arg_parser_with_polar(parser: Any) -> Any:
        return _add_flags(make_arg_parser(parser))

    @functools.wraps(validate)
    def validate_with_polar(args: argparse.Namespace) -> Any:
        apply_polar_arguments(args)
        return validate(args)

    cli_args_module.make_arg_parser = make_arg_parser_with_polar
    cli_args_module.validate_parsed_serve_args = validate_with_polar
