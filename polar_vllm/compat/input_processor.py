"""PoLar in vLLM's front end (vLLM 0.32): checked programs, predictions, cache salts.

* ``InputProcessor.__init__``: with PoLar on, builds the processor's
  :class:`~polar_vllm.serving.front_end.PolarFrontEnd` (which loads the predictor, so a missing,
  corrupt or mismatched predictor stops the engine from starting, with a clear message).
* ``InputProcessor.process_inputs``: resolves the request's program (its own, else the
  predictor's, else the default), writes its canonical text into the request's ``extra_args``
  and sets the program's prefix-cache salt. A bad program raises :class:`PolarRequestError` for
  that request only (HTTP 400 in the server); the engine never sees it.
* ``AsyncLLM.add_request``: predicts the programs of concurrent server requests in batches
  before they are processed. A prediction that raises falls back to the default program for
  that request alone (counted in ``polar_predictor_failures_total``).

Without PoLar each wrapper calls through unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from vllm.exceptions import VLLMValidationError

from polar_vllm.engine.config import PROGRAM_ARG, PolarConfig, polar_settings
from polar_vllm.engine.request_programs import program_cache_salt
from polar_vllm.program import ProgramError
from polar_vllm.serving.front_end import PolarFrontEnd
from polar_vllm.serving.prediction import PREDICTED_PROGRAM

__all__ = [
    "PolarRequestError",
    "polar_add_request",
    "polar_front_end",
    "polar_input_processor_init",
    "polar_process_inputs",
]

_FRONT_END_ATTR = "_polar_front_end"


class PolarRequestError(VLLMValidationError, ValueError):
    """A request's PoLar settings are invalid: a client error (HTTP 400), and a ``ValueError``
    for offline callers."""


def polar_front_end(processor: Any) -> PolarFrontEnd | None:
    """The processor's PoLar front end, or ``None`` with PoLar off."""
    return getattr(processor, _FRONT_END_ATTR, None)


def polar_input_processor_init(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap ``InputProcessor.__init__`` to set up PoLar when it is on."""

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        front_end = None
        settings = polar_settings(self.vllm_config.additional_config)
        if settings is not None:
            hf_config = self.model_config.hf_config.get_text_config()
            config = PolarConfig.from_dict(settings, hf_config.num_hidden_layers)
            front_end = PolarFrontEnd(config, self.model_config.model)
        setattr(self, _FRONT_END_ATTR, front_end)

    return wrapper


def polar_process_inputs(process_inputs: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``InputProcessor.process_inputs`` to attach checked programs and cache salts."""

    @functools.wraps(process_inputs)
    def wrapper(self: Any, request_id: str, prompt: Any, *args: Any, **kwargs: Any) -> Any:
        request = process_inputs(self, request_id, prompt, *args, **kwargs)
        front_end = polar_front_end(self)
        if front_end is None or request.sampling_params is None:
            return request
        params = request.sampling_params
        extra_args = dict(params.extra_args or {})

        def decode_prompt() -> str:
            return self.tokenizer.decode(request.prompt_token_ids or [])

        try:
            resolved = front_end.resolve(
                extra_args, lambda: front_end.question(prompt, decode_prompt, extra_args)
            )
        except ProgramError as error:
            raise PolarRequestError(
                str(error), parameter=PROGRAM_ARG, value=extra_args.get(PROGRAM_ARG)
            ) from error
        extra_args[PROGRAM_ARG] = resolved.text
        params.extra_args = extra_args
        request.cache_salt = program_cache_salt(
            resolved.program, front_end.config, request.cache_salt
        )
        return request

    return wrapper


def polar_add_request(add_request: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``AsyncLLM.add_request`` to predict programs of concurrent requests in batches."""

    @functools.wraps(add_request)
    async def wrapper(
        self: Any, request_id: str, prompt: Any, params: Any, *args: Any, **kwargs: Any
    ) -> Any:
        front_end = polar_front_end(self.input_processor)
        extra_args = getattr(params, "extra_args", None)
        if (
            front_end is None
            or not hasattr(params, "extra_args")
            or not (front_end.needs_prediction(extra_args))
        ):
            return await add_request(self, request_id, prompt, params, *args, **kwargs)
        text = front_end.question(prompt, extra_args=extra_args)
        token = PREDICTED_PROGRAM.set(await front_end.predict_async(text))
        try:
            return await add_request(self, request_id, prompt, params, *args, **kwargs)
        finally:
            PREDICTED_PROGRAM.reset(token)

    return wrapper
