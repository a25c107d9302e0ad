"""PoLar settings, request-program resolution, cache salts, program families and the
program-aware admission order (no engine needed)."""

from __future__ import annotations

import argparse

import pytest

from polar_vllm.compat.cli_args import apply_polar_arguments
from polar_vllm.engine.batching import (
    BURST_QUIET_S,
    gathering_burst,
    new_steps,
    program_aware_order,
)
from polar_vllm.engine.config import PolarConfig, PolarConfigError, polar_settings
from polar_vllm.engine.request_programs import program_cache_salt, resolve_request_program
from polar_vllm.executor import program_steps
from polar_vllm.program import ProgramError, full_program
from polar_vllm.program.families import homogeneous_program, random_polar_programs

DEPTH = 30


def test_defaults_allow_every_layer_twice():
    config = PolarConfig.from_dict({}, DEPTH)
    assert config.max_passes == 2 and config.loop_layers == frozenset(range(DEPTH))
    assert config.default_program == full_program(DEPTH) and config.scheduling == "fcfs"
    assert [config.slot_passes(layer) for layer in (0, 29)] == [2, 2]


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"max_pases": 2}, "unknown key"),
        ({"max_passes": 0}, "max_passes"),
        ({"max_passes": True}, "max_passes"),
        ({"loop_layers": "0-40"}, "loop_layers"),
        ({"default_program": "0-5,x"}, "default_program"),
        ({"scheduling": "random"}, "scheduling"),
        ({"predictor": 3}, "predictor"),
        ({"max_delay_s": 10}, "max_delay_s only applies to scheduling='program_aware'"),
        ({"scheduling": "program_aware", "max_delay_s": 0}, "max_delay_s must be"),
        ({"scheduling": "program_aware", "max_delay_s": "10"}, "max_delay_s must be"),
        ({"scheduling": "program_aware", "max_delay_s": True}, "max_delay_s must be"),
        ({"scheduling": "program_aware", "max_delay_s": float("nan")}, "max_delay_s must be"),
        ({"admission_window_s": 0.1}, "admission_window_s only applies to scheduling='program"),
        ({"scheduling": "program_aware", "admission_window_s": -1}, "admission_window_s must"),
        ({"scheduling": "program_aware", "admission_window_s": "1"}, "admission_window_s must"),
        ({"loop_layers": "0-9", "default_program": "0-29,20"}, "layer 20 may run only once"),
        ({"operating_point": "efficiency"}, "operating_point applies to a predictor's choices"),
        ({"predictor": "p", "operating_point": ""}, "operating_point must be a name"),
        ({"predictor": "p", "operating_point": 0.5}, "operating_point must be a name"),
    ],
)
def test_bad_settings_are_named(settings, named):
    with pytest.raises((PolarConfigError, ProgramError), match=named):
        PolarConfig.from_dict(settings, DEPTH)


def test_operating_point_setting_and_flag():
    config = PolarConfig.from_dict({"predictor": "p", "operating_point": "efficiency"}, DEPTH)
    assert config.operating_point == "efficiency"
    assert PolarConfig.from_dict({"predictor": "p"}, DEPTH).operating_point is None
    args = argparse.Namespace(
        polar=False,
        polar_predictor="smollm2-135m",
        polar_operating_point="efficiency",
        additional_config=None,
    )
    apply_polar_arguments(args)
    assert args.additional_config["polar"]["operating_point"] == "efficiency"
    args = argparse.Namespace(
        polar=True, polar_predictor=None, polar_operating_point="x", additional_config=None
    )
    with pytest.raises(SystemExit, match="needs --polar-predictor"):
        apply_polar_arguments(args)


def test_max_delay_defaults_and_reads():
    assert PolarConfig.from_dict({"scheduling": "program_aware"}, DEPTH).max_delay_s == 30.0
    settings = {"scheduling": "program_aware", "max_delay_s": 120}
    assert PolarConfig.from_dict(settings, DEPTH).max_delay_s == 120.0


def test_admission_window_defaults_and_reads():
    assert PolarConfig.from_dict({"scheduling": "program_aware"}, DEPTH).admission_window_s == 0.5
    settings = {"scheduling": "program_aware", "admission_window_s": 0}
    assert PolarConfig.from_dict(settings, DEPTH).admission_window_s == 0.0


def test_polar_settings_presence():
    assert polar_settings(None) is None and polar_settings({"other": 1}) is None
    assert polar_settings({"polar": None}) == {} and polar_settings({"polar": {"a": 1}}) == {"a": 1}
    with pytest.raises(PolarConfigError):
        polar_settings({"polar": "yes"})


def test_loop_layer_subset_limits_repeats():
    config = PolarConfig.from_dict({"loop_layers": "0-9"}, DEPTH)
    assert config.slot_passes(9) == 2 and config.slot_passes(10) == 1
    config.check_program((*range(10), 8, 9, *range(10, 30)))
    with pytest.raises(ProgramError, match="layer 12 may run only once"):
        config.check_program((*range(13), 12, *range(13, 30)))
    assert PolarConfig.from_dict({"max_passes": 1}, DEPTH).loop_layers == frozenset()


def test_request_program_sources():
    config = PolarConfig.from_dict({}, DEPTH)
    own = resolve_request_program({"polar_program": "0-9,8-29"}, config, predicted=(0, 1))
    assert (own.source, own.text) == ("request", "0-9,8-29")
    predicted = resolve_request_program({"other": 1}, config, predicted=(0, 1, 2))
    assert (predicted.source, predicted.program) == ("predictor", (0, 1, 2))
    default = resolve_request_program(None, config)
    assert (default.source, default.program) == ("default", full_program(DEPTH))
    with pytest.raises(ProgramError, match="unknown key"):
        resolve_request_program({"polar_progam": "full"}, config)
    with pytest.raises(ProgramError, match="got dict"):
        resolve_request_program({"polar_program": {"a": 1}}, config)


def test_cache_salt_separates_programs_but_not_the_full_program():
    config = PolarConfig.from_dict({}, DEPTH)
    assert program_cache_salt(full_program(DEPTH), config, None) is None
    assert program_cache_salt(full_program(DEPTH), config, "user") == "user"
    first = program_cache_salt((0, 1, 2), config, None)
    assert first != program_cache_salt((0, 1, 3), config, None)
    assert first == program_cache_salt((0, 1, 2), config, None)
    assert program_cache_salt((0, 1, 2), config, "user").startswith("user|polar:")


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 2.0])
def test_homogeneous_program_length(fraction):
    program = homogeneous_program(DEPTH, fraction)
    assert len(program) == int(fraction * DEPTH + 0.5)
    assert all(program.count(layer) <= 2 for layer in range(DEPTH))
    assert list(program) == sorted(program)


def test_random_polar_programs_are_distinct_and_in_range():
    programs = random_polar_programs(DEPTH, 8, seed=3)
    assert len(set(programs)) == 8 and full_program(DEPTH) not in programs
    assert all(0.6 * DEPTH <= len(program) <= 1.2 * DEPTH for program in programs)
    assert programs == random_polar_programs(DEPTH, 8, seed=3)


FULL = tuple(range(DEPTH))
SKIP_LAST = tuple(range(DEPTH - 1))  # shares every step with FULL
LOOP_TOP = (*range(DEPTH), DEPTH - 3, DEPTH - 2, DEPTH - 1)  # adds 3 steps to FULL
LOOP_MIDDLE = (*range(12), *range(4, DEPTH))  # adds 8 steps to FULL


def _order(waiting, running, free_slots, now=10.0):
    return program_aware_order(
        waiting, running, lambda r: r[0], lambda r: r[1], now, 30.0, free_slots
    )


def test_new_steps_counts_unshared_layer_passes():
    assert new_steps(SKIP_LAST, frozenset(program_steps(FULL))) == 0
    assert new_steps(LOOP_TOP, frozenset(program_steps(FULL))) == 3
    assert new_steps(LOOP_MIDDLE, frozenset()) == len(LOOP_MIDDLE)


def test_program_aware_order_prefers_programs_sharing_layers_with_the_batch():
    waiting = [(LOOP_MIDDLE, 1.0), (LOOP_TOP, 2.0), (SKIP_LAST, 3.0), (LOOP_MIDDLE, 4.0)]
    order = _order(waiting, [FULL, FULL], free_slots=3)
    assert order == [(SKIP_LAST, 3.0), (LOOP_TOP, 2.0), (LOOP_MIDDLE, 1.0), (LOOP_MIDDLE, 4.0)]


def test_program_aware_order_counts_new_steps_per_admitted_request():
    # Three LOOP_MIDDLE requests add 8 steps (2.7 per request); one LOOP_TOP request adds 3.
    waiting = [(LOOP_TOP, 1.0), (LOOP_MIDDLE, 2.0), (LOOP_MIDDLE, 3.0), (LOOP_MIDDLE, 4.0)]
    assert _order(waiting, [FULL], free_slots=3)[:3] == waiting[1:]
    assert _order(waiting, [FULL], free_slots=1)[0] == (LOOP_TOP, 1.0)


def test_program_aware_order_on_an_empty_batch_starts_with_the_largest_group():
    waiting = [(SKIP_LAST, 1.0), (LOOP_MIDDLE, 2.0), (LOOP_MIDDLE, 3.0), (FULL, 4.0)]
    order = _order(waiting, [], free_slots=3)
    # LOOP_MIDDLE's two requests first; then FULL and SKIP_LAST add no step: oldest first.
    assert order == [(LOOP_MIDDLE, 2.0), (LOOP_MIDDLE, 3.0), (SKIP_LAST, 1.0), (FULL, 4.0)]


def test_program_aware_order_keeps_arrival_order_past_the_free_slots():
    waiting = [(LOOP_MIDDLE, 1.0), (LOOP_TOP, 2.0), (FULL, 3.0), (LOOP_MIDDLE, 4.0)]
    order = _order(waiting, [FULL], free_slots=1)
    assert order == [(FULL, 3.0), (LOOP_MIDDLE, 1.0), (LOOP_MIDDLE, 4.0), (LOOP_TOP, 2.0)]
    assert sorted(order) == sorted(waiting)


def test_program_aware_order_never_starves_old_requests():
    waiting = [(LOOP_MIDDLE, 1.0), (FULL, 50.0), (FULL, 51.0)]
    order = _order(waiting, [FULL], free_slots=1, now=60.0)
    assert order[0] == (LOOP_MIDDLE, 1.0)


def test_gathering_burst_holds_while_requests_arrive_within_the_window():
    quiet = BURST_QUIET_S
    # The newest request arrived just now: more may follow.
    assert gathering_burst([10.0, 10.0 + quiet / 2], 10.0 + quiet, window_s=0.5)
    # Quiet for longer than BURST_QUIET_S: the burst is over.
    assert not gathering_burst([10.0, 10.0 + quiet / 2], 10.0 + 2 * quiet, window_s=0.5)
    # Still arriving, but the oldest has waited the whole window.
    assert not gathering_burst([10.0, 10.5], 10.5 + quiet / 2, window_s=0.5)
    # Window 0 never holds; nothing waiting, nothing to hold.
    assert not gathering_burst([10.0], 10.0, window_s=0)
    assert not gathering_burst([], 10.0, window_s=0.5)
