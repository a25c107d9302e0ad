"""PoLar hooks in vLLM's OpenAI server (vLLM 0.32).

* ``OpenAIServingChat.create_chat_completion``: the request's last user message becomes the
  predictor's input (:data:`~polar_vllm.serving.prediction.QUESTION_TEXT`; each HTTP request
  runs in its own task, so the value never reaches another request).
* ``attach_endpoint_plugins`` of the app builder: with PoLar on, the app also gets the
  ``/v1/polar/program`` route and its alias ``/polar/program``
  (:mod:`polar_vllm.serving.routes`), both behind the server's API key. vLLM's own key check
  (``AuthenticationMiddleware``) covers only paths under ``/v1`` and a few other prefixes, so
  the alias runs the same check itself.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from polar_vllm.engine.config import polar_settings
from polar_vllm.serving.prediction import QUESTION_TEXT
from polar_vllm.serving.routes import last_user_message, polar_router

__all__ = ["install_serving_hooks"]

_APP_MODULE = "vllm.entrypoints.launchers.app"


def _front_end_of_app(app: Any) -> Any:
    from .input_processor import polar_front_end

    return polar_front_end(app.state.engine_client.input_processor)


def _api_key_check(app: Any) -> Callable[[Any], bool]:
    """``authorized(request)`` with vLLM's own API-key check and keys (``--api-key``, else
    ``VLLM_API_KEY``); always true when the server has no key."""
    from vllm import envs
    from vllm.entrypoints.serve.middleware.authenticate import AuthenticationMiddleware

    server_args = app.state.args
    tokens = [key for key in (server_args.api_key or [envs.VLLM_API_KEY]) if key]
    if not tokens:
        return lambda request: True
    check = AuthenticationMiddleware(app, tokens=tokens)  # used for its verify_token only
    return lambda request: check.verify_token(request.headers)


def _chat_question(create_chat_completion: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(create_chat_completion)
    async def wrapper(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        QUESTION_TEXT.set(last_user_message(getattr(request, "messages", None)))
        return await create_chat_completion(self, request, *args, **kwargs)

    return wrapper


def _attach_polar_route(attach_endpoint_plugins: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(attach_endpoint_plugins)
    def wrapper(app: Any, *args: Any, **kwargs: Any) -> Any:
        result = attach_endpoint_plugins(app, *args, **kwargs)
        server_args = getattr(app.state, "args", None)
        if polar_settings(getattr(server_args, "additional_config", None)) is not None:
            app.include_router(polar_router(_front_end_of_app, _api_key_check(app)))
        return result

    return wrapper


def install_serving_hooks(wrap: Callable[[Any, str, Callable[..., Any]], None]) -> None:
    """Install the server hooks with ``wrap(owner, name, wrapper_factory)``."""
    from vllm.entrypoints.openai.chat_completion.serving import OpenAIServingChat

    wrap(OpenAIServingChat, "create_chat_completion", _chat_question)
    app_module = sys.modules.get(_APP_MODULE)
    if app_module is None:
        import importlib

        app_module = importlib.import_module(_APP_MODULE)
    wrap(app_module, "attach_endpoint_plugins", _attach_polar_route)
