"""KV blocks by program in vLLM's scheduler (vLLM 0.32).

The engine core gives a PoLar model one KV-cache group per :class:`~polar_vllm.kv_groups.KVGroup`
(:mod:`.kv_cache_groups`), each with the group role :data:`POLAR_GROUP_ROLE`, so vLLM's
coordinator manages each group with :class:`ProgramGroupManager`: vLLM's full-attention
manager, except that a request whose program never enters the group gets no blocks in it.
Blocks a request does get are allocated, prefix-cached, freed and preempted by vLLM's code.

* ``Scheduler.__init__``: with PoLar on, hands the managers a :class:`ProgramMembership`, which
  reads each request's program from the scheduler's own request table.
* ``KVCacheManager.get_computed_blocks``: a prefix-cache lookup over the request's own groups
  only (vLLM looks a block up in every group of one spec, and a block is never cached in a
  group its program skips).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vllm.v1.core.kv_cache_manager import KVCacheBlocks
from vllm.v1.core.single_type_kv_cache_manager import FullAttentionManager

from polar_vllm.compat.attention_slots import slot_of_layer_name
from polar_vllm.compat.model_runner import request_program
from polar_vllm.config import PolarConfig, polar_settings
from polar_vllm.kv_groups import KVGroup, KVGroupLayout

__all__ = [
    "POLAR_GROUP_ROLE",
    "ProgramGroupManager",
    "ProgramMembership",
    "layout_of_groups",
    "polar_get_computed_blocks",
    "polar_scheduler_init",
]

POLAR_GROUP_ROLE = "polar_program"
"""``KVCacheGroupSpec.role`` of a PoLar KV-cache group: vLLM picks the group's manager by it."""

_GROUPS_ATTR = "polar_kv_groups"


def layout_of_groups(layer_names: Sequence[Sequence[str]], depth: int) -> KVGroupLayout:
    """The layout of KV-cache groups given by their layer names, in group order."""
    groups = []
    for names in layer_names:
        slots = sorted(slot_of_layer_name(name, depth) for name in names)
        passes = {pass_index for _, pass_index in slots}
        if len(passes) != 1:
            raise ValueError(f"a PoLar KV-cache group mixes passes: {list(names)}")
        groups.append(KVGroup(passes.pop(), tuple(layer for layer, _ in slots)))
    return KVGroupLayout(groups)


class ProgramMembership:
    """The KV-cache groups each scheduled request's program enters.

    Reads the program from the scheduler's request table; a request it does not know (none
    should reach the KV cache manager) counts as entering every group.
    """

    def __init__(
        self, requests: Mapping[str, Any], layout: KVGroupLayout, config: PolarConfig
    ) -> None:
        self.layout = layout
        self._requests = requests
        self._config = config
        self._all = frozenset(range(len(layout.groups)))

    def groups(self, request_id: str) -> frozenset[int]:
        """The groups request ``request_id`` gets KV blocks in."""
        request = self._requests.get(request_id)
        if request is None:
            return self._all
        # Remembered on the request: the managers ask once per group per step.
        groups = getattr(request, _GROUPS_ATTR, None)
        if groups is None:
            params = request.sampling_params
            program = request_program(params.extra_args if params else None, self._config)
            groups = self.layout.groups_of(program)
            setattr(request, _GROUPS_ATTR, groups)
        return groups


class ProgramGroupManager(FullAttentionManager):
    """vLLM's full-attention manager of one PoLar KV-cache group: a request whose program never
    enters the group allocates, caches and adopts no blocks in it. Without a membership (before
    the scheduler attaches one) every request enters."""

    membership: ProgramMembership | None = None

    def _outside(self, request_id: str) -> bool:
        membership = self.membership
        return membership is not None and self.kv_cache_group_id not in membership.groups(
            request_id
        )

    def get_num_blocks_to_allocate(self, request_id: str, *args: Any, **kwargs: Any) -> int:
        """vLLM's count, or 0 outside the request's groups."""
        if self._outside(request_id):
            return 0
        return super().get_num_blocks_to_allocate(request_id, *args, **kwargs)

    def add_local_computed_blocks(
        self, request_id: str, new_computed_blocks: Sequence[Any], *args: Any, **kwargs: Any
    ) -> None:
        """vLLM's adoption of prefix-cache hits; nothing outside the request's groups (where
        the lookup finds no hits)."""
        if self._outside(request_id):
            assert not new_computed_blocks
            return
        super().add_local_computed_blocks(request_id, new_computed_blocks, *args, **kwargs)

    def allocate_external_computed_blocks(self, request_id: str, *args: Any, **kwargs: Any) -> None:
        """vLLM's allocation for connector-computed tokens; nothing outside the request's groups."""
        if not self._outside(request_id):
            super().allocate_external_computed_blocks(request_id, *args, **kwargs)

    def allocate_new_blocks(self, request_id: str, *args: Any, **kwargs: Any) -> list[Any]:
        """vLLM's new blocks, or none outside the request's groups."""
        if self._outside(request_id):
            return []
        return super().allocate_new_blocks(request_id, *args, **kwargs)

    def cache_blocks(self, request: Any, *args: Any, **kwargs: Any) -> None:
        """vLLM's prefix caching of full blocks; nothing outside the request's groups."""
        if not self._outside(request.request_id):
            super().cache_blocks(request, *args, **kwargs)


def _attach_membership(scheduler: Any) -> None:
    """Give the scheduler's PoLar group managers the membership of its requests."""
    kv_cache_manager = scheduler.kv_cache_manager
    managers = kv_cache_manager.coordinator.single_type_managers
    if not managers or not all(isinstance(m, ProgramGroupManager) for m in managers):
        raise RuntimeError("PoLar KV-cache groups did not get PoLar group managers")
    hf_config = scheduler.vllm_config.model_config.hf_config.get_text_config()
    config = PolarConfig.from_dict(
        polar_settings(scheduler.vllm_config.additional_config), hf_config.num_hidden_layers
    )
    groups = scheduler.kv_cache_config.kv_cache_groups
    layout = layout_of_groups([group.layer_names for group in groups], config.depth)
    membership = ProgramMembership(scheduler.requests, layout, config)
    for manager in managers:
        manager.membership = membership
    kv_cache_manager.polar_membership = membership


def polar_scheduler_init(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap ``Scheduler.__init__`` to allocate KV blocks by program when PoLar is on."""

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if polar_settings(self.vllm_config.additional_config) is not None:
            _attach_membership(self)

    return wrapper


def polar_get_computed_blocks(get_computed_blocks: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``KVCacheManager.get_computed_blocks``: with PoLar, look a request's prompt up in
    the KV-cache groups its program enters only."""

    @functools.wraps(get_computed_blocks)
    def wrapper(self: Any, request: Any) -> tuple[KVCacheBlocks, int, int]:
        membership: ProgramMembership | None = getattr(self, "polar_membership", None)
        if membership is None:
            return get_computed_blocks(self, request)
        groups = sorted(membership.groups(request.request_id))
        if len(groups) == self.num_kv_cache_groups:
            return get_computed_blocks(self, request)
        if not groups or not self.prefix_cache_lookup_enabled(request):
            return self.empty_kv_cache_blocks, 0, 0
        return _lookup_in_groups(self, request, groups)

    return wrapper


def _lookup_in_groups(
    kv_cache_manager: Any, request: Any, groups: list[int]
) -> tuple[KVCacheBlocks, int, int]:
    """vLLM's full-attention prefix-cache lookup restricted to ``groups``: the longest prefix
    of full blocks cached in every one of them (all PoLar groups share one spec)."""
    managers = kv_cache_manager.coordinator.single_type_managers
    first = managers[groups[0]]
    # As vLLM's lookup: when the whole prompt hits, its last token is still computed.
    hit_blocks, hit_length = type(first).find_longest_cache_hit(
        block_hashes=request.block_hashes,
        max_length=request.num_tokens - 1,
        kv_cache_group_ids=groups,
        block_pool=kv_cache_manager.block_pool,
        kv_cache_spec=first.kv_cache_spec,
        drop_eagle_block=False,
        alignment_tokens=first.cache_hit_alignment_tokens,
        dcp_world_size=first.dcp_world_size,
        pcp_world_size=first.pcp_world_size,
    )
    if hit_length == 0:
        return kv_cache_manager.empty_kv_cache_blocks, 0, 0
    blocks: list[list[Any]] = [[] for _ in managers]
    for group, group_blocks in zip(groups, hit_blocks, strict=True):
        blocks[group] = group_blocks
    if (
        kv_cache_manager.enable_kv_cache_events
        and getattr(request, "kv_cache_report_mode", "incremental") == "full"
    ):
        kv_cache_manager.coordinator.emit_cached_block_events(request, tuple(blocks))
    return kv_cache_manager.create_kv_cache_blocks(tuple(blocks)), hit_length, 0
