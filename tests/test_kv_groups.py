"""The KV-cache group layout (no engine): which (layer, pass) slots share a group, which
groups a program enters, and the group sizes the settings refuse."""

from __future__ import annotations

import pytest

from polar_vllm.engine.config import PolarConfig, PolarConfigError
from polar_vllm.engine.kv_groups import KVGroup, KVGroupLayout, program_slots
from polar_vllm.program import full_program, parse_program

DEPTH = 30


def _layout(**settings) -> KVGroupLayout:
    return KVGroupLayout.from_config(PolarConfig.from_dict(settings, DEPTH))


def test_default_is_one_group_per_slot_pass_one_first():
    layout = _layout()
    assert len(layout.groups) == 2 * DEPTH
    assert layout.groups[0] == KVGroup(0, (0,)) and layout.groups[DEPTH] == KVGroup(1, (0,))
    assert layout.group_of(7, 1) == DEPTH + 7


def test_groups_of_k_layers_never_mix_passes():
    layout = _layout(kv_group_layers=5, loop_layers="0-9")
    assert layout.groups == (
        *(KVGroup(0, tuple(range(start, start + 5))) for start in range(0, DEPTH, 5)),
        KVGroup(1, (0, 1, 2, 3, 4)),
        KVGroup(1, (5, 6, 7, 8, 9)),
    )


def test_a_program_enters_the_groups_of_the_slots_it_runs():
    layout = _layout(kv_group_layers=5)
    program = parse_program("0-9,8-9,10-14,20-29", DEPTH, 2)
    assert program_slots(program)[10:12] == [(8, 1), (9, 1)]
    assert layout.groups_of(program) == {0, 1, 2, 4, 5, 7}
    assert layout.groups_of(()) == frozenset()
    assert layout.groups_of(full_program(DEPTH)) == set(range(6))
    assert layout.slots_per_token(program) == 30


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"kv_group_layers": 0}, "kv_group_layers must be an integer"),
        ({"kv_group_layers": 31}, "kv_group_layers must be an integer"),
        ({"kv_group_layers": "2"}, "kv_group_layers must be an integer"),
        ({"kv_group_layers": 4}, r"kv_group_layers=4 does not divide the model depth 30"),
        ({"kv_group_layers": 5, "loop_layers": "0-7"}, "loop_layers covers only part"),
    ],
)
def test_group_sizes_the_allocator_cannot_honour_are_refused(settings, named):
    with pytest.raises(PolarConfigError, match=named):
        PolarConfig.from_dict(settings, DEPTH)
