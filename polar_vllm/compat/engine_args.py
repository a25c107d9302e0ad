"""Engine configuration with PoLar on (vLLM 0.32): the architecture override and the
settings the PoLar decoder loop needs.

When ``additional_config`` holds ``"polar"``, :func:`polar_engine_config` (installed around
``EngineArgs.create_engine_config``) makes vLLM build the PoLar subclass of the model's own
class (and refuses a model of any other architecture) on the V1 model runner (the one
:mod:`.model_runner` hooks; vLLM may pick its V2 runner on GPUs), and refuses vLLM settings
under which KV blocks cannot follow programs (:mod:`.kv_cache_groups`). Compilation is left as
the user set it: vLLM's default compiles, ``enforce_eager=True`` runs eagerly
(:mod:`.compiled_layers`). Without ``"polar"`` it changes nothing.

It also raises oneDNN's primitive cache (:data:`ONEDNN_CACHE_ENV`, unless the user set it;
only vLLM's CPU path uses oneDNN, other devices ignore it). vLLM's CPU GEMMs build one
oneDNN primitive per row count they see (about 20 ms each, and about 1 MB for Qwen2.5-0.5B's
largest GEMM). Stock vLLM sees a few dozen row counts; a PoLar
batch that mixes programs runs partial steps on subsets of its rows and sees hundreds to
thousands (1,248 in 690 requests at 27 programs), more than oneDNN's default cache of 1,024
holds, so the cache evicts and rebuilds primitives at every pass (measured: a second pass over
the same requests took 84 s with the default cache, 56 s with 8,192).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

from polar_vllm.compat.kv_cache_groups import check_program_kv_supported
from polar_vllm.engine.config import polar_settings
from polar_vllm.models import POLAR_ARCHITECTURES, unsupported_architecture_message

__all__ = [
    "ONEDNN_CACHE_ENV",
    "POLAR_ONEDNN_CACHE",
    "V2_RUNNER_ENV",
    "PolarArchitectureOverride",
    "polar_engine_config",
]

V2_RUNNER_ENV = "VLLM_USE_V2_MODEL_RUNNER"

ONEDNN_CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
"""oneDNN's primitive cache capacity, read once per process when oneDNN first builds one."""

POLAR_ONEDNN_CACHE = 8192
"""The capacity a PoLar engine asks for: room for every row count of its partial steps."""


class PolarArchitectureOverride:
    """``hf_overrides`` callable: apply the user's overrides, then swap in the PoLar class.

    A module-level class (not a closure) so that the engine configuration stays picklable."""

    def __init__(self, user_overrides: Mapping[str, Any] | Callable[[Any], Any] | None) -> None:
        self.user_overrides = user_overrides

    def __call__(self, hf_config: Any) -> Any:
        """Return ``hf_config`` with its architecture replaced by the PoLar one."""
        if callable(self.user_overrides):
            hf_config = self.user_overrides(hf_config)
        elif self.user_overrides:
            hf_config.update(dict(self.user_overrides))
        architectures = list(getattr(hf_config, "architectures", None) or [])
        polar_names = {name for name, _ in POLAR_ARCHITECTURES.values()}
        if architectures and architectures[0] in polar_names:
            return hf_config
        supported = [name for name in architectures if name in POLAR_ARCHITECTURES]
        if supported:
            hf_config.architectures = [POLAR_ARCHITECTURES[supported[0]][0]]
        return hf_config


def _check_polar_architecture(architectures: list[str]) -> None:
    polar_names = {name for name, _ in POLAR_ARCHITECTURES.values()}
    if not architectures or architectures[0] not in polar_names:
        raise ValueError(unsupported_architecture_message(architectures))


def polar_engine_config(create_engine_config: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``EngineArgs.create_engine_config`` to apply the PoLar settings when PoLar is on."""

    @functools.wraps(create_engine_config)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        settings = polar_settings(self.additional_config)
        if settings is not None and not isinstance(self.hf_overrides, PolarArchitectureOverride):
            if settings.get("scheduling") == "program_aware":
                self.scheduler_cls = "polar_vllm.compat.scheduler.ProgramAwareScheduler"
            self.hf_overrides = PolarArchitectureOverride(self.hf_overrides)
            # The programs reach the model through the V1 model runner (see .model_runner);
            # the engine processes inherit this from the front end.
            os.environ.setdefault(V2_RUNNER_ENV, "0")
            # Read by the engine processes' oneDNN (they start after this); an in-process
            # engine gets it only if nothing in this process has used oneDNN's cache yet.
            os.environ.setdefault(ONEDNN_CACHE_ENV, str(POLAR_ONEDNN_CACHE))
        vllm_config = create_engine_config(self, *args, **kwargs)
        if isinstance(self.hf_overrides, PolarArchitectureOverride):
            _check_polar_architecture(vllm_config.model_config.architectures)
            check_program_kv_supported(vllm_config)
        return vllm_config

    return wrapper
