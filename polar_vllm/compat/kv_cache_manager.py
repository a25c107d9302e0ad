"""KV blocks by program in vLLM's scheduler (vLLM 0.32).

The engine core gives a PoLar model one KV-cache group per
:class:`~polar_vllm.engine.kv_groups.KVGroup` (:mod:`.kv_cache_groups`), each with the group role
:data:`POLAR_GROUP_ROLE`, so vLLM's coordinator manages each group with :class:`ProgramGroupManager`
(a group of full-attention layers) or :class:`ProgramSlidingWindowManager` (a group of
sliding-window layers, role :data:`POLAR_SLIDING_GROUP_ROLE`): vLLM's own manager of that attention
type, except that a request whose program never enters the group gets no blocks in it. Blocks a
request does get are allocated, prefix-cached, freed (outside a sliding window too) and preempted by
vLLM's code.

* ``Scheduler.__init__``: with PoLar on, hands the managers and the coordinator
  (:mod:`.kv_coordinator`) a :class:`ProgramMembership`, which reads each request's program
  from the scheduler's own request table.
* ``KVCacheManager.get_computed_blocks``: a prefix-cache lookup over the request's own groups
  only (vLLM looks a block up in every group of one spec, and a block is never cached in a
  group its program skips), reconciled across attention types as vLLM's hybrid lookup does.
* ``KVCacheManager.allocate_slots``: a running request's step that needs no new block and
  fills no block to cache returns at once (:func:`polar_allocate_slots`), instead of asking
  each of its groups four times.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vllm.v1.core.kv_cache_manager import KVCacheBlocks
from vllm.v1.core.single_type_kv_cache_manager import FullAttentionManager, SlidingWindowManager
from vllm.v1.request import RequestStatus

from polar_vllm.compat.attention_slots import slot_of_layer_name
from polar_vllm.compat.kv_coordinator import MEMBERSHIP_ATTR
from polar_vllm.engine.config import PolarConfig, polar_settings
from polar_vllm.engine.kv_groups import KVGroup, KVGroupLayout
from polar_vllm.engine.request_programs import request_program

__all__ = [
    "POLAR_GROUP_ROLE",
    "POLAR_SLIDING_GROUP_ROLE",
    "ProgramGroupManager",
    "ProgramMembership",
    "ProgramSlidingWindowManager",
    "layout_of_groups",
    "polar_allocate_slots",
    "polar_get_computed_blocks",
    "polar_scheduler_init",
]

POLAR_GROUP_ROLE = "polar_program"
"""``KVCacheGroupSpec.role`` of a PoLar KV-cache group of full-attention layers: vLLM picks the
group's manager by it."""
POLAR_SLIDING_GROUP_ROLE = "polar_program_sliding_window"
"""``KVCacheGroupSpec.role`` of a PoLar KV-cache group of sliding-window layers."""

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
        self._all_ordered = tuple(range(len(layout.groups)))

    def groups(self, request_id: str) -> frozenset[int]:
        """The groups request ``request_id`` gets KV blocks in."""
        return self._entered(request_id)[0]

    def ordered_groups(self, request_id: str) -> tuple[int, ...]:
        """:meth:`groups`, in increasing order."""
        return self._entered(request_id)[1]

    def _entered(self, request_id: str) -> tuple[frozenset[int], tuple[int, ...]]:
        request = self._requests.get(request_id)
        if request is None:
            return self._all, self._all_ordered
        # Remembered on the request: the coordinator and managers ask at every step.
        entered = getattr(request, _GROUPS_ATTR, None)
        if entered is None:
            params = request.sampling_params
            program = request_program(params.extra_args if params else None, self._config)
            groups = self.layout.groups_of(program)
            entered = groups, tuple(sorted(groups))
            setattr(request, _GROUPS_ATTR, entered)
        return entered


class _ProgramGroupMixin:
    """Mixed in before one of vLLM's single-type managers to make it manage one PoLar KV-cache
    group: a request whose program never enters the group allocates, caches and adopts no
    blocks in it. Without a membership (before the scheduler attaches one) every request
    enters."""

    kv_cache_group_id: int
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


class ProgramGroupManager(_ProgramGroupMixin, FullAttentionManager):
    """vLLM's full-attention manager of one PoLar KV-cache group (see ``_ProgramGroupMixin``)."""


class ProgramSlidingWindowManager(_ProgramGroupMixin, SlidingWindowManager):
    """vLLM's sliding-window manager of one PoLar KV-cache group of sliding-window layers: it
    frees a request's blocks that fall out of the window, as for a stock sliding-window layer
    (see ``_ProgramGroupMixin``)."""


def _attach_membership(scheduler: Any) -> None:
    """Give the scheduler's PoLar group managers the membership of its requests."""
    kv_cache_manager = scheduler.kv_cache_manager
    managers = kv_cache_manager.coordinator.single_type_managers
    if not managers or not all(isinstance(m, _ProgramGroupMixin) for m in managers):
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
    kv_cache_manager.polar_lockstep = _in_lockstep(kv_cache_manager)
    setattr(kv_cache_manager.coordinator, MEMBERSHIP_ATTR, membership)


def _in_lockstep(kv_cache_manager: Any) -> bool:
    """Whether the groups a request enters always hold the same number of its blocks, and
    cache the same: full attention everywhere, one block size (which is also the hash block
    size), no speculative or retained groups. Then one group answers for all of them."""
    coordinator = kv_cache_manager.coordinator
    managers = coordinator.single_type_managers
    block_sizes = {manager.block_size for manager in managers}
    return (
        all(type(manager) is ProgramGroupManager for manager in managers)
        and block_sizes == {coordinator.block_pool.hash_block_size}
        and not getattr(coordinator, "eagle_group_ids", None)
        and not getattr(kv_cache_manager, "retained_hit_group_ids", None)
        and not getattr(coordinator, "num_reprefillable_tokens", 0)
    )


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


def polar_allocate_slots(allocate_slots: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``KVCacheManager.allocate_slots``: a running request's step that needs no new KV
    block and fills no block to prefix-cache (most decode steps) returns vLLM's empty result
    at once.

    vLLM asks every group of the request four times per step (blocks to drop, blocks to
    allocate, new blocks, blocks to cache), and with PoLar's groups (one per layer and pass)
    that is hundreds of calls per request per step. When the groups are in lockstep
    (``_in_lockstep``: each entered group holds the same blocks count for the request, since
    they grow by the same token counts), its first and last groups answer for all: if they
    hold the slots this step needs and have cached every full block, so do the others, and
    vLLM's calls would all answer "nothing". Any other step takes vLLM's path."""

    @functools.wraps(allocate_slots)
    def wrapper(
        self: Any,
        request: Any,
        num_new_tokens: int,
        num_new_computed_tokens: int = 0,
        new_computed_blocks: Any = None,
        num_lookahead_tokens: int = 0,
        num_external_computed_tokens: int = 0,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        if (
            getattr(self, "polar_lockstep", False)
            and not args
            and not num_new_computed_tokens
            and not num_external_computed_tokens
            and (new_computed_blocks is None or not any(new_computed_blocks.blocks))
            and not kwargs.get("num_encoder_tokens")
            and not kwargs.get("full_sequence_must_fit")
            and request.status == RequestStatus.RUNNING
            and _needs_nothing(self, request, num_new_tokens + num_lookahead_tokens)
        ):
            return self.empty_kv_cache_blocks
        return allocate_slots(
            self,
            request,
            num_new_tokens,
            num_new_computed_tokens,
            new_computed_blocks,
            num_lookahead_tokens,
            num_external_computed_tokens,
            *args,
            **kwargs,
        )

    return wrapper


def _needs_nothing(kv_cache_manager: Any, request: Any, num_new_slots: int) -> bool:
    """Whether ``request``'s groups already hold its next ``num_new_slots`` slots and have
    cached every block it has filled (asked of its first and last group; the others are in
    lockstep with them)."""
    groups = kv_cache_manager.polar_membership.ordered_groups(request.request_id)
    if not groups:
        return True
    managers = kv_cache_manager.coordinator.single_type_managers
    computed = min(request.num_computed_tokens, kv_cache_manager.max_model_len)
    need_slots = min(computed + num_new_slots, kv_cache_manager.max_model_len)
    cacheable = min(computed + num_new_slots, request.num_tokens)
    for group in (groups[0], groups[-1]):
        manager = managers[group]
        held = manager.req_to_blocks.get(request.request_id)
        if held is None or len(held) * manager.block_size < need_slots:
            return False
        if manager.enable_caching and manager.kv_cache_spec.prefix_cacheable:
            cached = manager.num_cached_block.get(request.request_id, 0)
            if cached < cacheable // manager.block_size:
                return False
    return True


def _lookup_in_groups(
    kv_cache_manager: Any, request: Any, groups: list[int]
) -> tuple[KVCacheBlocks, int, int]:
    """vLLM's hybrid prefix-cache lookup restricted to ``groups``: the longest prefix whose
    blocks every one of them holds (each attention type checked by its own manager, as vLLM
    does for all groups)."""
    coordinator = kv_cache_manager.coordinator
    entered = set(groups)
    view = copy.copy(coordinator)
    view.attention_groups = [
        spec_group._replace(group_ids=[g for g in spec_group.group_ids if g in entered])
        for spec_group in coordinator.attention_groups
        if entered.intersection(spec_group.group_ids)
    ]
    # As vLLM's lookup: when the whole prompt hits, its last token is still computed.
    hit_blocks, hit_length, num_uncached = view.find_longest_cache_hit(
        request.block_hashes, request.num_tokens - 1
    )
    if hit_length == 0:
        return kv_cache_manager.empty_kv_cache_blocks, 0, 0
    if (
        kv_cache_manager.enable_kv_cache_events
        and getattr(request, "kv_cache_report_mode", "incremental") == "full"
    ):
        coordinator.emit_cached_block_events(request, hit_blocks)
    shared_prefix_boundary = hit_length + num_uncached if num_uncached else 0
    return kv_cache_manager.create_kv_cache_blocks(hit_blocks), hit_length, shared_prefix_boundary
