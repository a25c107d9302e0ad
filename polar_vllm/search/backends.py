"""Build the program generator a search config asks for."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from polar_vllm.compat.shutdown import shutdown_engine
from polar_vllm.models.bundled import resolve_model
from polar_vllm.search.config import SearchConfig
from polar_vllm.search.generation import (
    ProgramGenerator,
    ReferenceProgramGenerator,
    VllmProgramGenerator,
)

__all__ = ["open_generator"]


@contextmanager
def open_generator(config: SearchConfig) -> Iterator[tuple[ProgramGenerator, Any]]:
    """The generator and tokenizer of ``config.backend``; a vLLM engine is shut down on exit.

    The reference model runs on the GPU when there is one, else on the CPU.
    """
    directory = resolve_model(config.model)
    if config.backend == "reference":
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=getattr(torch, config.dtype))
        model = model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
        yield ReferenceProgramGenerator(model, tokenizer), tokenizer
        return
    from polar_vllm.compat.batch_jobs import batch_job_llm

    llm = batch_job_llm(directory, config.dtype, config.polar_settings(), **config.engine_args())
    try:
        yield VllmProgramGenerator(llm), llm.get_tokenizer()
    finally:
        shutdown_engine(llm)
