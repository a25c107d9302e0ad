"""The KV-cache coordinator's per-step loops over a request's own groups only (vLLM 0.32).

At every step vLLM's ``KVCacheCoordinator`` asks each KV-cache group's manager about each
scheduled request: how many blocks it needs, new blocks, blocks to drop, blocks to cache. With
PoLar's groups (:mod:`.kv_cache_groups`: one per (layer, pass) slot by default, 48 for a
24-layer model) a request's program enters only some of them, and the other groups' managers
answer "none" (:class:`~.kv_cache_manager.ProgramGroupManager`); at hundreds of running
requests those calls are a measurable share of a step. These wrappers ask only the groups the
request enters, in group order and with vLLM's arguments, so they return what vLLM's loops
return. They are active once the scheduler hands the coordinator a
:class:`~.kv_cache_manager.ProgramMembership` (PoLar on); otherwise vLLM's loops run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "polar_allocate_new_blocks",
    "polar_cache_blocks",
    "polar_get_num_blocks_to_allocate",
    "polar_remove_skipped_blocks",
]

MEMBERSHIP_ATTR = "polar_membership"
"""The coordinator attribute holding the scheduler's membership (PoLar on)."""


def _entered(coordinator: Any, request_id: str) -> tuple[int, ...] | None:
    """The groups ``request_id`` enters, in order; None when PoLar is off."""
    membership = getattr(coordinator, MEMBERSHIP_ATTR, None)
    return None if membership is None else membership.ordered_groups(request_id)


def polar_get_num_blocks_to_allocate(original: Callable[..., int]) -> Callable[..., int]:
    """``get_num_blocks_to_allocate`` summed over the request's groups."""

    @functools.wraps(original)
    def wrapper(
        self: Any,
        request_id: str,
        num_tokens: int,
        new_computed_blocks: Sequence[Sequence[Any]],
        num_encoder_tokens: int,
        total_computed_tokens: int,
        num_local_computed_tokens: int,
        num_tokens_main_model: int,
        apply_admission_cap: bool = False,
        prefill_end: int = 0,
    ) -> int:
        groups = _entered(self, request_id)
        if groups is None:
            return original(
                self,
                request_id,
                num_tokens,
                new_computed_blocks,
                num_encoder_tokens,
                total_computed_tokens,
                num_local_computed_tokens,
                num_tokens_main_model,
                apply_admission_cap=apply_admission_cap,
                prefill_end=prefill_end,
            )
        if self.retention_interval != 0:  # as vLLM: only sparse retention uses prefill_end
            prefill_end = 0
        managers = self.single_type_managers
        return sum(
            managers[group].get_num_blocks_to_allocate(
                request_id,
                num_tokens,
                new_computed_blocks[group],
                total_computed_tokens,
                num_local_computed_tokens,
                num_tokens_main_model,
                apply_admission_cap=apply_admission_cap,
                prefill_end=prefill_end,
            )
            for group in groups
        )

    return wrapper


def polar_allocate_new_blocks(original: Callable[..., Any]) -> Callable[..., Any]:
    """``allocate_new_blocks``: new blocks in the request's groups, none in the others."""

    @functools.wraps(original)
    def wrapper(
        self: Any,
        request_id: str,
        num_tokens: int,
        num_tokens_main_model: int,
        num_encoder_tokens: int = 0,
    ) -> tuple[list[Any], ...]:
        groups = _entered(self, request_id)
        if groups is None:
            return original(self, request_id, num_tokens, num_tokens_main_model, num_encoder_tokens)
        managers = self.single_type_managers
        blocks: list[list[Any]] = [[] for _ in managers]
        for group in groups:
            blocks[group] = managers[group].allocate_new_blocks(
                request_id, num_tokens, num_tokens_main_model
            )
        return tuple(blocks)

    return wrapper


def polar_remove_skipped_blocks(original: Callable[..., None]) -> Callable[..., None]:
    """``remove_skipped_blocks`` in the request's groups (it holds no blocks elsewhere)."""

    @functools.wraps(original)
    def wrapper(
        self: Any,
        request_id: str,
        processed_computed_tokens: int,
        num_prompt_tokens: int | None = None,
    ) -> None:
        groups = _entered(self, request_id)
        if groups is None:
            original(self, request_id, processed_computed_tokens, num_prompt_tokens)
            return
        managers = self.single_type_managers
        for group in groups:
            managers[group].remove_skipped_blocks(
                request_id, processed_computed_tokens, num_prompt_tokens
            )

    return wrapper


def polar_cache_blocks(original: Callable[..., None]) -> Callable[..., None]:
    """``cache_blocks`` in the request's groups (it has nothing to cache elsewhere)."""

    @functools.wraps(original)
    def wrapper(self: Any, request: Any, num_computed_tokens: int) -> None:
        groups = _entered(self, request.request_id)
        if groups is None:
            original(self, request, num_computed_tokens)
            return
        from vllm.v1.core.kv_cache_coordinator import replay_boundaries

        boundaries = replay_boundaries(
            request.num_prompt_tokens,
            self.scheduler_block_size,
            use_eagle=bool(self.eagle_group_ids),
        )
        managers = self.single_type_managers
        for group in groups:
            manager = managers[group]
            if manager.enable_caching:
                manager.cache_blocks(
                    request,
                    self.get_num_cacheable_tokens(num_computed_tokens, group),
                    retention_interval=self.retention_interval,
                    replay_boundaries=boundaries,
                )

    return wrapper
