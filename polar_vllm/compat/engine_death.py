"""A PoLar server whose engine dies exits with a non-zero status (vLLM 0.32).

When an engine-core process dies (killed by the out-of-memory killer, say), vLLM's API server
notices, stops the HTTP server and its remaining processes, and then returns from ``vllm
serve`` with exit status 0, as if it had been asked to stop. A supervisor that restarts a
service on failure would then leave it down.

* :func:`record_engine_death` wraps ``MPClient.shutdown``: vLLM marks the client's engine dead
  (``resources.engine_dead``) when its monitor finds an engine-core process gone or the engine
  reports its own failure, and then shuts the client down; a requested shutdown finds the mark
  unset (it sets it itself while cleaning up). So a shutdown that starts with the mark set
  records that the engine died. The wrapper only records: the shutdown runs unchanged.
* :func:`exit_nonzero_on_engine_death` wraps the API server's ``serve_http``: once the HTTP
  server has shut down, if the engine died, the process exits with status 1. It acts only when
  ``additional_config["polar"]`` is present, like every PoLar hook.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from polar_vllm.engine.config import polar_settings

__all__ = ["ENGINE_DEATH_EXIT_STATUS", "exit_nonzero_on_engine_death", "record_engine_death"]

ENGINE_DEATH_EXIT_STATUS = 1
_DIED_ATTR = "_polar_engine_died"

logger = logging.getLogger(f"vllm.{__name__}")  # vLLM's handler: the server's log


def record_engine_death(shutdown: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``MPClient.shutdown`` to record, on the client, a shutdown caused by engine death."""

    @functools.wraps(shutdown)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        # Alive finalizer: the first shutdown. Engine already marked dead: vLLM found it dead.
        if self._finalizer.alive and self.resources.engine_dead:
            setattr(self, _DIED_ATTR, True)
        return shutdown(self, *args, **kwargs)

    return wrapper


def engine_died(engine_client: Any) -> bool:
    """Whether the engine of vLLM's engine client died (as opposed to being stopped)."""
    return bool(getattr(getattr(engine_client, "engine_core", None), _DIED_ATTR, False))


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
        # Read the app's state now: it is gone once the server has shut down.
        server_args = getattr(app.state, "args", None)
        engine_client = getattr(app.state, "engine_client", None)
        shutdown = await serve_http(app, *args, **kwargs)
        if (
            engine_client is None
            or polar_settings(getattr(server_args, "additional_config", None)) is None
        ):
            return shutdown
        return _exit_if_engine_died(shutdown, engine_client)

    return wrapper
