"""A PoLar server whose engine dies exits with a non-zero status (vLLM 0.32).

When an engine-core process dies (killed by the out-of-memory killer, say), vLLM's API server
notices, stops the HTTP server and its remaining processes, and then returns from ``vllm
serve`` with exit status 0, as if it had been asked to stop. A supervisor that restarts a
service on failure would then leave it down. :func:`exit_nonzero_on_engine_death` wraps the
API server's ``serve_http``: once the HTTP server has shut down, if the engine client saw its
engine die, the process exits with status 1.

Like every PoLar hook it acts only when ``additional_config["polar"]`` is present.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from polar_vllm.config import polar_settings

__all__ = ["ENGINE_DEATH_EXIT_STATUS", "exit_nonzero_on_engine_death"]

ENGINE_DEATH_EXIT_STATUS = 1

logger = logging.getLogger(__name__)


def engine_died(engine_client: Any) -> bool:
    """Whether vLLM's engine client saw an engine core die or fail (not a requested stop)."""
    resources = getattr(getattr(engine_client, "engine_core", None), "resources", None)
    return bool(getattr(resources, "engine_dead", False))


async def _exit_if_engine_died(shutdown: Coroutine[Any, Any, Any], engine_client: Any) -> Any:
    result = await shutdown
    if engine_died(engine_client):
        logger.error("vLLM engine died; the server exits with status %d", ENGINE_DEATH_EXIT_STATUS)
        raise SystemExit(ENGINE_DEATH_EXIT_STATUS)
    return result


def exit_nonzero_on_engine_death(serve_http: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``serve_http(app, ...)``, whose result is the coroutine the server awaits until it
    has shut down, so that with PoLar on that coroutine ends in ``SystemExit(1)`` when the
    engine died."""

    @functools.wraps(serve_http)
    async def wrapper(app: Any, *args: Any, **kwargs: Any) -> Any:
        shutdown = await serve_http(app, *args, **kwargs)
        server_args = getattr(app.state, "args", None)
        engine_client = getattr(app.state, "engine_client", None)
        if (
            engine_client is None
            or polar_settings(getattr(server_args, "additional_config", None)) is None
        ):
            return shutdown
        return _exit_if_engine_died(shutdown, engine_client)

    return wrapper
