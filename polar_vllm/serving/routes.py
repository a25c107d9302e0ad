"""``POST /v1/polar/program``: the program PoLar would run for a prompt, and where it comes from.

Body: ``{"prompt": "..."}`` or ``{"messages": [...]}`` (the last user message is read), and
optionally ``"polar_program"`` to check a program of one's own. Answer: ``{"program": text,
"executed_layers": n, "depth": D, "source": "predictor" | "request" | "default"}``, plus
``"predictor_error"`` when the predictor failed on the prompt (the answer is then the default
program, which is what a request with that prompt runs); a bad program or body gives HTTP 400
with the reason.

``/polar/program`` is an alias. Both paths take the server's API key (``--api-key``): the route
runs the predictor, so it is as protected as the ``/v1`` generation routes; a request without a
valid key gets HTTP 401.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from polar_vllm.engine.config import PROGRAM_ARG
from polar_vllm.engine.request_programs import resolve_request_program
from polar_vllm.program import ProgramError

__all__ = ["PROGRAM_ROUTE", "PROGRAM_ROUTE_ALIAS", "last_user_message", "polar_router"]

PROGRAM_ROUTE = "/v1/polar/program"
PROGRAM_ROUTE_ALIAS = "/polar/program"


def last_user_message(messages: Any) -> str | None:
    """The text of the last ``user`` message of an OpenAI-style message list."""
    for message in reversed(list(messages or [])):
        role = message.get("role") if isinstance(message, dict) else getattr(message, "role", None)
        if role != "user":
            continue
        content = message.get("content") if isinstance(message, dict) else message.content
        if isinstance(content, str):
            return content
        if not isinstance(content, (list, tuple)):  # e.g. a number in a hand-written body
            return None
        parts = [
            part.get("text", "") if isinstance(part, dict) else getattr(part, "text", "")
            for part in content
        ]
        return "\n".join(part for part in parts if part)
    return None


def polar_router(front_end_of: Any, authorized: Callable[[Request], bool]) -> APIRouter:
    """A FastAPI router with the program route and its alias; ``front_end_of(app)`` gives the
    app's :class:`~polar_vllm.serving.front_end.PolarFrontEnd`, ``authorized(request)`` checks
    the request's API key (true when the server has none)."""
    router = APIRouter()

    async def polar_program(request: Request) -> JSONResponse:
        if not authorized(request):
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        front_end = front_end_of(request.app)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "body must be JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
        text = body.get("prompt")
        if text is None:
            text = last_user_message(body.get("messages"))
        if not isinstance(text, str):
            return JSONResponse(
                {"error": "give 'prompt' (text) or 'messages' with a user message"},
                status_code=400,
            )
        extra_args = {PROGRAM_ARG: body[PROGRAM_ARG]} if PROGRAM_ARG in body else {}
        prediction = None
        if front_end.needs_prediction(extra_args):
            prediction = await front_end.predict_async(text)
        try:
            predicted = prediction.program if prediction is not None else None
            resolved = resolve_request_program(extra_args, front_end.config, predicted)
        except ProgramError as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        answer = {
            "program": resolved.text,
            "executed_layers": len(resolved.program),
            "depth": front_end.config.depth,
            "source": resolved.source,
        }
        if prediction is not None and prediction.error is not None:
            answer["predictor_error"] = prediction.error
        return JSONResponse(answer)

    for path in (PROGRAM_ROUTE, PROGRAM_ROUTE_ALIAS):
        router.add_api_route(path, polar_program, methods=["POST"])
    return router
