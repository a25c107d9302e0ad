"""KV-cache groups that follow programs (vLLM 0.32): the engine-core side.

With PoLar on, the model's attention layers (one per (layer, pass) KV slot) are grouped into vLLM
KV-cache groups as :class:`~polar_vllm.engine.kv_groups.KVGroupLayout` says: ``kv_group_layers``
consecutive layers of one pass per group. vLLM's hybrid KV cache manager then keeps a block table
per group, all groups drawing blocks from one shared pool (the groups' KV tensors overlay one
allocation, a block holding ``kv_group_layers`` layers), and the scheduler side
(:mod:`.kv_cache_manager`) allocates a request's blocks only in the groups its program enters.

* ``kv_cache_utils.get_kv_cache_groups``: the PoLar grouping (group role
  :data:`~.kv_cache_manager.POLAR_GROUP_ROLE`, so vLLM manages the groups with
  :class:`~.kv_cache_manager.ProgramGroupManager`; a group of sliding-window layers, as
  Gemma 3 interleaves with global ones, gets :data:`~.kv_cache_manager.POLAR_SLIDING_GROUP_ROLE`
  and :class:`~.kv_cache_manager.ProgramSlidingWindowManager`). Every layer of a group has one
  KV-cache spec (an extra pass's slot has its layer's), and all groups one page size, so the
  groups share vLLM's one block pool as in its hybrid allocator;
* ``get_kv_cache_configs`` (engine core): ``num_gpu_blocks_override`` keeps its meaning, blocks
  of the whole model's KV (every slot), so the pool gets that many blocks per group; and the
  capacity each kind of program gets is logged;
* ``KVCacheCoordinator``'s per-request loops (:mod:`.kv_coordinator`): over the groups the
  request's program enters only;
* :func:`check_program_kv_supported` (engine configuration): refuses, at start, settings under
  which vLLM would not keep separate groups.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from vllm.logger import init_logger

from polar_vllm.compat.attention_slots import slot_of_layer_name
from polar_vllm.compat.kv_cache_manager import (
    POLAR_GROUP_ROLE,
    POLAR_SLIDING_GROUP_ROLE,
    ProgramGroupManager,
    ProgramSlidingWindowManager,
    polar_allocate_slots,
    polar_get_computed_blocks,
    polar_scheduler_init,
)
from polar_vllm.compat.kv_coordinator import (
    polar_allocate_new_blocks,
    polar_cache_blocks,
    polar_get_num_blocks_to_allocate,
    polar_remove_skipped_blocks,
)
from polar_vllm.engine.config import PolarConfig, PolarConfigError, polar_settings
from polar_vllm.engine.kv_groups import KVGroupLayout
from polar_vllm.program import full_program

__all__ = [
    "check_program_kv_supported",
    "install_program_kv_hooks",
    "polar_kv_cache_configs",
    "polar_kv_cache_groups",
    "program_kv_tokens",
]

logger = init_logger(f"vllm.{__name__}")  # under "vllm" for vLLM's log handler


def _polar_config(vllm_config: Any) -> PolarConfig | None:
    settings = polar_settings(vllm_config.additional_config)
    if settings is None:
        return None
    depth = vllm_config.model_config.hf_config.get_text_config().num_hidden_layers
    return PolarConfig.from_dict(settings, depth)


def check_program_kv_supported(vllm_config: Any) -> None:
    """Refuse vLLM settings under which KV blocks cannot follow programs."""
    if vllm_config.scheduler_config.disable_hybrid_kv_cache_manager:
        raise PolarConfigError(
            "PoLar allocates KV blocks by program through vLLM's hybrid KV cache manager, "
            "which disable_hybrid_kv_cache_manager (--disable-hybrid-kv-cache-manager, or a "
            "KV connector without hybrid support) turns off; leave it on with PoLar"
        )
    if vllm_config.kv_transfer_config is not None:
        raise PolarConfigError(
            "PoLar's KV blocks by program (kv_group_layers) do not support KV connectors "
            "(kv_transfer_config) yet"
        )


def polar_kv_cache_groups(get_kv_cache_groups: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``get_kv_cache_groups`` to group a PoLar model's KV slots by ``kv_group_layers``."""

    @functools.wraps(get_kv_cache_groups)
    def wrapper(vllm_config: Any, kv_cache_spec: dict[str, Any]) -> Any:
        config = _polar_config(vllm_config)
        if config is None or not kv_cache_spec:
            return get_kv_cache_groups(vllm_config, kv_cache_spec)
        return _program_groups(config, kv_cache_spec)

    return wrapper


def _program_groups(config: PolarConfig, kv_cache_spec: dict[str, Any]) -> list[Any]:
    """One ``KVCacheGroupSpec`` per group of the layout, its layers in layer order."""
    from vllm.v1.core.kv_cache_utils import unify_kv_cache_spec_page_size
    from vllm.v1.kv_cache_interface import KVCacheGroupSpec

    roles = _group_roles()
    kinds = sorted({type(spec).__name__ for spec in kv_cache_spec.values()})
    if not {type(spec) for spec in kv_cache_spec.values()} <= set(roles):
        raise PolarConfigError(
            "PoLar's KV blocks by program support full-attention and sliding-window layers; "
            f"this model has {kinds}"
        )
    # As vLLM's hybrid allocator: one page size for all groups (a layer with smaller pages gets
    # proportionally larger blocks), so that every group draws from the one block pool.
    kv_cache_spec = unify_kv_cache_spec_page_size(kv_cache_spec)
    layout = KVGroupLayout.from_config(config)
    names: list[list[tuple[int, str]]] = [[] for _ in layout.groups]
    for name in kv_cache_spec:
        layer, pass_index = slot_of_layer_name(name, config.depth)
        names[layout.group_of(layer, pass_index)].append((layer, name))
    groups = []
    for group, members in zip(layout.groups, names, strict=True):
        if len(members) != len(group.layers):
            raise RuntimeError(
                f"PoLar KV-cache group {group} found layers {[name for _, name in members]}"
            )
        specs = {kv_cache_spec[name] for _, name in members}
        if len(specs) != 1:
            raise PolarConfigError(
                f"kv_group_layers={config.kv_group_layers} puts layers {list(group.layers)} "
                f"with different KV caches ({sorted(map(str, specs))}) in one group; choose "
                "a kv_group_layers whose windows hold layers of one attention type (1 always "
                "does)"
            )
        (spec,) = specs
        layer_names = [name for _, name in sorted(members)]
        groups.append(KVCacheGroupSpec(layer_names, spec, role=roles[type(spec)]))
    return groups


def _group_roles() -> dict[type, str]:
    """The group role of each KV-cache spec type a PoLar group may have (exact types: vLLM's
    subclasses of these need managers of their own)."""
    from vllm.v1.kv_cache_interface import FullAttentionSpec, SlidingWindowSpec

    return {FullAttentionSpec: POLAR_GROUP_ROLE, SlidingWindowSpec: POLAR_SLIDING_GROUP_ROLE}


def program_kv_tokens(num_blocks: int, block_size: int, groups_entered: int) -> int:
    """Tokens a pool of ``num_blocks`` holds for requests that enter ``groups_entered`` groups
    (each token takes a block slot in every group it enters)."""
    return num_blocks * block_size // max(groups_entered, 1)


def polar_kv_cache_configs(get_kv_cache_configs: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap the engine core's ``get_kv_cache_configs``: with PoLar, ``num_gpu_blocks_override``
    counts blocks of every group (as a stock block spans every layer), and the capacity that
    programs get is logged."""

    @functools.wraps(get_kv_cache_configs)
    def wrapper(vllm_config: Any, *args: Any, **kwargs: Any) -> Any:
        config = _polar_config(vllm_config)
        if config is None:
            return get_kv_cache_configs(vllm_config, *args, **kwargs)
        layout = KVGroupLayout.from_config(config)
        cache_config = vllm_config.cache_config
        override = cache_config.num_gpu_blocks_override
        if override is not None:
            cache_config.num_gpu_blocks_override = override * len(layout.groups)
        try:
            kv_cache_configs = get_kv_cache_configs(vllm_config, *args, **kwargs)
        finally:
            cache_config.num_gpu_blocks_override = override
        _log_capacity(kv_cache_configs[0], layout, config)
        return kv_cache_configs

    return wrapper


def _log_capacity(kv_cache_config: Any, layout: KVGroupLayout, config: PolarConfig) -> None:
    groups = kv_cache_config.kv_cache_groups
    if not groups:
        return
    block_size = groups[0].kv_cache_spec.block_size
    num_blocks = kv_cache_config.num_blocks
    full = len(layout.groups_of(full_program(config.depth)))
    logger.info(
        "PoLar KV cache: %d groups of %d layers share %d blocks of %d tokens; the full "
        "program holds %s tokens, a program entering every group %s",
        len(layout.groups),
        config.kv_group_layers,
        num_blocks,
        block_size,
        f"{program_kv_tokens(num_blocks, block_size, full):,}",
        f"{program_kv_tokens(num_blocks, block_size, len(layout.groups)):,}",
    )


def install_program_kv_hooks(wrap: Callable[[Any, str, Callable], None]) -> None:
    """Install the KV-by-program hooks with the package's ``wrap`` helper (idempotent)."""
    from vllm.v1.core import kv_cache_utils
    from vllm.v1.core.kv_cache_coordinator import KVCacheCoordinator
    from vllm.v1.core.kv_cache_manager import KVCacheManager
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.engine import core
    from vllm.v1.kv_cache_spec_registry import KVCacheSpecRegistry

    KVCacheSpecRegistry.register_role_manager(POLAR_GROUP_ROLE, ProgramGroupManager)
    KVCacheSpecRegistry.register_role_manager(POLAR_SLIDING_GROUP_ROLE, ProgramSlidingWindowManager)
    wrap(kv_cache_utils, "get_kv_cache_groups", polar_kv_cache_groups)
    wrap(core, "get_kv_cache_configs", polar_kv_cache_configs)
    wrap(Scheduler, "__init__", polar_scheduler_init)
    wrap(KVCacheManager, "get_computed_blocks", polar_get_computed_blocks)
    wrap(KVCacheManager, "allocate_slots", polar_allocate_slots)
    wrap(KVCacheCoordinator, "get_num_blocks_to_allocate", polar_get_num_blocks_to_allocate)
    wrap(KVCacheCoordinator, "allocate_new_blocks", polar_allocate_new_blocks)
    wrap(KVCacheCoordinator, "remove_skipped_blocks", polar_remove_skipped_blocks)
    wrap(KVCacheCoordinator, "cache_blocks", polar_cache_blocks)
