"""The ``polar-vllm`` command."""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Sequence

from polar_vllm.models.bundled import BUNDLED_MODELS, prepare_model


def _cmd_prepare_model(args: argparse.Namespace) -> None:
    directory = prepare_model(args.name, force=args.force)
    if args.check_vllm:
        from polar_vllm.cli.demo import check_vllm_loads

        check_vllm_loads(str(directory))
    print(directory)


def _cmd_run_reference(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from polar_vllm.executor.reference import generate_greedy
    from polar_vllm.program import describe_program, parse_program

    directory = prepare_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    program = parse_program(args.program, model.config.num_hidden_layers)
    prompt_ids = tokenizer(args.prompt).input_ids
    tokens = generate_greedy(model, prompt_ids, program, args.max_tokens, tokenizer.eos_token_id)
    result = describe_program(program, model.config.num_hidden_layers)
    result["text"] = tokenizer.decode(tokens, skip_special_tokens=True)
    print(json.dumps(result, indent=1))


COMMAND_GROUP_MODULES: tuple[str, ...] = ("polar_vllm.predictor.cli", "polar_vllm.search.cli")
"""Modules that add their own subcommands; each has ``add_subcommands(commands)``."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``polar-vllm`` command."""
    parser = argparse.ArgumentParser(prog="polar-vllm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser(
        "prepare-model", help="convert a bundled GGUF model into the cache and print its path"
    )
    prepare.add_argument("name", choices=sorted(BUNDLED_MODELS))
    prepare.add_argument("--force", action="store_true", help="rebuild even if cached")
    prepare.add_argument(
        "--check-vllm", action="store_true", help="also load the model in vLLM and generate"
    )
    prepare.set_defaults(handler=_cmd_prepare_model)

    reference = commands.add_parser(
        "run-reference", help="generate with a program through the transformers reference"
    )
    reference.add_argument("--model", default="smollm2-135m", choices=sorted(BUNDLED_MODELS))
    reference.add_argument("--program", default="full")
    reference.add_argument("--prompt", required=True)
    reference.add_argument("--max-tokens", type=int, default=16)
    reference.set_defaults(handler=_cmd_run_reference)
    for module_name in COMMAND_GROUP_MODULES:
        importlib.import_module(module_name).add_subcommands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``polar-vllm`` console script."""
    args = build_parser().parse_args(argv)
    args.handler(args)


if __name__ == "__main__":
    main()
