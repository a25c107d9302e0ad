"""Check and attach each request's program in the front end (vLLM 0.32).

:func:`polar_process_inputs` wraps ``InputProcessor.process_inputs``: with PoLar on, it
resolves the request's program (:mod:`polar_vllm.request_programs`), writes its canonical text
back into the request's ``extra_args`` and sets the program's prefix-cache salt. A bad program
raises :class:`PolarRequestError` for that request only (HTTP 400 in the server); the engine never
sees it. Without PoLar the wrapper returns the request untouched.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from vllm.exceptions import VLLMValidationError

from polar_vllm.config import PROGRAM_ARG, PolarConfig, polar_settings
from polar_vllm.program import ProgramError
from polar_vllm.request_programs import program_cache_salt, resolve_request_program

__all__ = ["PolarRequestError", "polar_process_inputs"]

_CONFIG_ATTR = "_polar_config"


class PolarRequestError(VLLMValidationError, ValueError):
    """A request's PoLar settings are invalid: a client error (HTTP 400), and a ``ValueError``
    for offline callers."""


def _polar_config(processor: Any) -> PolarConfig | None:
    """The processor's PoLar settings (parsed once), or ``None`` with PoLar off."""
    if not hasattr(processor, _CONFIG_ATTR):
        settings = polar_settings(processor.vllm_config.additional_config)
        config = None
        if settings is not None:
            depth = processor.model_config.hf_config.get_text_config().num_hidden_layers
            config = PolarConfig.from_dict(settings, depth)
        setattr(processor, _CONFIG_ATTR, config)
    return getattr(processor, _CONFIG_ATTR)


def polar_process_inputs(process_inputs: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``InputProcessor.process_inputs`` to attach checked programs and cache salts."""

    @functools.wraps(process_inputs)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        request = process_inputs(self, *args, **kwargs)
        config = _polar_config(self)
        if config is None or request.sampling_params is None:
            return request
        params = request.sampling_params
        extra_args = dict(params.extra_args or {})
        try:
            resolved = resolve_request_program(extra_args, config)
        except ProgramError as error:
            raise PolarRequestError(
                str(error), parameter=PROGRAM_ARG, value=extra_args.get(PROGRAM_ARG)
            ) from error
        extra_args[PROGRAM_ARG] = resolved.text
        params.extra_args = extra_args
        request.cache_salt = program_cache_salt(resolved.program, config, request.cache_salt)
        return request

    return wrapper
