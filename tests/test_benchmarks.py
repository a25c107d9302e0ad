"""The benchmark scripts run end to end (short versions; timings are not asserted here,
benchmarks report them)."""

from __future__ import annotations

import importlib
import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from polar_vllm.compat.engine_environment import engine_process
from polar_vllm.predictor import init_random_predictor
from polar_vllm.search import write_label_records
from polar_vllm.search.labels import LabelRecord

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def in_process_engines() -> Iterator[None]:
    """The benchmark's engines start in this process: nothing is timed here, and spawning
    vLLM's engine and worker processes would cost more than the short run itself. Only for
    benchmarks that shut every engine down before they return, none while another still runs
    (see ``engine_checks.vllm_engine``)."""
    with engine_process(in_process=True):
        yield


def _load(name: str) -> ModuleType:
    """Import benchmark script ``name`` under its own name, as the scripts import each other
    (and as an engine process that unpickles one of its functions finds it)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


def _check_throughput_results(results: dict, batch_sizes: list[int], variants: set[str]) -> None:
    rows = results["rows"]
    assert {(row["batch_size"], row["variant"]) for row in rows} == {
        (size, variant) for size in batch_sizes for variant in variants | {"stock"}
    }
    for row in rows:
        assert row["tokens_per_s"] > 0 and row["ratio_to_stock"] > 0
        assert len(row["ratios_by_repeat"]) == row["repeats"]
        if row["repeats"] == 1:  # one run each: the ratio is that run's
            assert row["ratios_by_repeat"] == [pytest.approx(row["ratio_to_stock"])]
        if row["variant"] == "stock":
            assert row["ratio_to_stock"] == 1.0 and row["mean_executed_layers"] == 30
            assert row["ratios_by_repeat"] == [pytest.approx(1.0)] * row["repeats"]
    h75 = next(row for row in rows if row["variant"] == "h75")
    assert h75["mean_executed_layers"] == 23
    assert results["kv_slots"] == {"stock": 30, "polar": 60}


@pytest.mark.usefixtures("in_process_engines")
def test_throughput_benchmark_quick(tmp_path):
    throughput = _load("throughput")
    labels = tmp_path / "labels.jsonl"
    valid = [[*range(10), 8, 9, *range(10, 30)], [*range(20), *range(25, 30)]]
    records = [
        LabelRecord(
            name, "?", "1", 1, "smollm2-135m", 30, False, tuple((tuple(p), True) for p in ok)
        )
        for name, ok in (("a", [list(range(30)), valid[0]]), ("b", []), ("c", [valid[1]]))
    ]
    write_label_records(records, labels)
    predictor = init_random_predictor(tmp_path / "predictor", "smollm2-135m", 30)
    argv = ["--quick", "--results-dir", str(tmp_path), "--labels", str(labels)]
    results = throughput.main([*argv, "--predictor", str(predictor)])
    _check_throughput_results(results, [1, 4], {"full", "h75", "mixed", "labels", "predicted"})
    by_key = {(row["batch_size"], row["variant"]): row for row in results["rows"]}
    assert by_key[1, "labels"]["mean_executed_layers"] == 30  # a: full is its shortest
    assert by_key[4, "labels"]["mean_executed_layers"] == (30 + 25 + 30 + 25) / 4
    assert json.loads((tmp_path / "throughput_quick.json").read_text())["rows"]
    assert (tmp_path / "throughput_quick.png").stat().st_size > 0


@pytest.mark.slow
def test_throughput_benchmark_issue_sizes(tmp_path):
    throughput = _load("throughput")
    argv = ["--batch-sizes", "1,16,64", "--programs", "full,h75,mixed", "--repeats", "1"]
    results = throughput.main([*argv, "--results-dir", str(tmp_path), "--tag", "t"])
    _check_throughput_results(results, [1, 16, 64], {"full", "h75", "mixed"})


@pytest.mark.usefixtures("in_process_engines")
def test_program_batching_benchmark_quick(tmp_path):
    program_batching = _load("program_batching")
    argv = ["--quick", "--max-delay-s", "5", "--results-dir", str(tmp_path)]
    results = program_batching.main(argv)
    assert results["settings"]["max_delay_s"] == 5.0
    assert results["settings"]["dtype"] == "float32"
    machine = results["machine"]
    assert machine["cpu_count"] >= 1 and machine["cpu_capability"] and machine["cpu_model"]
    assert machine["cpu_bf16"] in (True, False, None)
    (row,) = results["rows"]
    assert (row["mix"], row["batch_size"], row["requests"]) == ("mixed", 4, 16)
    assert set(row["tokens_per_s"]) == {"stock", "polar_fcfs", "polar_program_aware"}
    assert row["ratio_to_stock"]["stock"] == 1.0 and row["distinct_programs"] == 8
    assert 1.0 < row["ideal_ratio"] < 1.5
    assert set(row["share_of_ideal"]) == {"polar_fcfs", "polar_program_aware"}
    assert all(share > 0 for share in row["share_of_ideal"].values())
    assert all(seconds > 0 for seconds in row["mean_time_to_first_token_s"].values())
    assert (tmp_path / "program_batching_quick.json").exists()
    assert (tmp_path / "program_batching_quick.png").stat().st_size > 0


@pytest.mark.parametrize("model", ["smollm2-135m", "qwen2.5-coder-0.5b"])
def test_program_batching_labels_default_to_the_models_oracle_study(model):
    from polar_vllm.models.bundled import BUNDLED_MODELS
    from polar_vllm.search.labels import label_programs

    args = _load("program_batching").parse_args(["--model", model])
    pool = label_programs(args.labels, BUNDLED_MODELS[model].num_layers)
    assert len(set(pool)) > 1, "the labels mix must be heterogeneous"


def test_results_record_paths_relative_to_the_repository(tmp_path):
    import argparse

    throughput = _load("throughput")
    args = argparse.Namespace(
        labels=BENCHMARKS / "results" / "search" / "smollm2" / "labels.jsonl",
        elsewhere=tmp_path / "labels.jsonl",
        max_tokens=32,
        results_dir=tmp_path,
    )
    assert throughput.settings_record(args) == {
        "labels": "benchmarks/results/search/smollm2/labels.jsonl",
        "elsewhere": "labels.jsonl",
        "max_tokens": 32,
    }


def test_executor_core_benchmark_quick(tmp_path):
    executor_core = _load("executor_core")
    assert executor_core.main(["--quick", "--out", str(tmp_path)]) == 0
    assert list(tmp_path.glob("executor_core_*.json")) and list(tmp_path.glob("*.png"))


def test_compile_boundaries_benchmark_quick(tmp_path):
    import torch

    compile_boundaries, executor_core = _load("compile_boundaries"), _load("executor_core")
    model = executor_core.ToyDecoder(3, 32, 64, torch.device("cpu"), torch.float32)
    forwards = compile_boundaries.forwards(model)
    hidden = torch.randn(5, 32)
    with torch.inference_mode():
        eager = forwards["eager"](hidden, torch.zeros_like(hidden))
        # each layer's graph runs that layer's weights (one code object per layer)
        for name in ("whole", "per_layer"):
            compiled = forwards[name](hidden, torch.zeros_like(hidden))
            for got, want in zip(compiled, eager, strict=True):
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert compile_boundaries.main(["--quick", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "compile_boundaries_quick.json").read_text())["rows"]
    assert [row["tokens"] for row in rows] == [1, 16, 64, 256]
    assert all(row["whole_ms"] > 0 and row["per_layer_vs_whole"] > 0 for row in rows)


def test_executor_graphs_benchmark_quick(tmp_path):
    executor_graphs = _load("executor_graphs")
    assert executor_graphs.main(["--quick", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "executor_graphs_cpu.json").read_text())["rows"]
    assert {(row["batch"], row["workload"]) for row in rows} == {
        (batch, name) for batch in (1, 4) for name in ("dense", "plan-full", "homog-75", "hetero")
    }
    assert all(row["time_ms"] > 0 for row in rows)


@pytest.mark.usefixtures("in_process_engines")
def test_predictor_overhead_benchmark_quick(tmp_path):
    predictor_overhead = _load("predictor_overhead")
    argv = ["--batch-sizes", "1,2", "--repeats", "1", "--engine-repeats", "1"]
    argv += ["--max-tokens", "4", "--eager", "--results-dir", str(tmp_path), "--tag", "t"]
    report = predictor_overhead.main(argv)
    assert [row["batch_size"] for row in report["rows"]] == [1, 2]
    for row in report["rows"]:
        assert row["total_ms"] > 0 and row["generation_s"] > 0
        assert 0 < row["share_of_latency"] < 1
    assert json.loads((tmp_path / "predictor_overhead_t.json").read_text()) == report


def test_layer_call_cost_prices_schedules_by_steps_and_rows():
    layer_call_cost = _load("layer_call_cost")
    programs = [(0, 1, 2, 3), (0, 1, 2, 3), (0, 1, 1, 2, 3), (0, 2, 3), (0, 2, 3)]
    mean_layers = (4 + 4 + 5 + 3 + 3) / 5
    # Purely weight-bound steps: a forward costs its schedule length (0, 1, 1', 2, 3).
    weight_bound = layer_call_cost.schedule_estimate(programs, 4, lambda rows: 1.0)
    assert weight_bound["schedule_steps"] == weight_bound["decode_forward_ms"] == 5
    assert weight_bound["speedup"] == pytest.approx(4 / 5)
    assert weight_bound["share_of_ideal"] == pytest.approx((4 / 5) / (4 / mean_layers))
    # Purely per-row steps: a forward costs its layer-token evaluations, the ideal.
    per_row = layer_call_cost.schedule_estimate(programs, 4, lambda rows: rows)
    assert per_row["decode_forward_ms"] == 5 * mean_layers
    assert per_row["share_of_ideal"] == pytest.approx(1.0)
    assert per_row["mean_step_rows"] == pytest.approx(19 / 5)  # 19 layer-token runs, 5 steps


def test_layer_call_cost_prices_program_aware_batches_of_a_queue():
    layer_call_cost = _load("layer_call_cost")
    loop, skip = (0, 1, 2, 1, 2, 3), (0, 3)
    queue = [loop, skip, loop, skip]  # in arrival order, batches of 2 would mix them
    # The group adding the fewest new steps per request goes first.
    assert layer_call_cost.admitted_batches(queue, 2) == [[skip, skip], [loop, loop]]
    assert layer_call_cost.admitted_batches(queue, 4) == [[skip, skip, loop, loop]]
    weight_bound = layer_call_cost.queue_estimate(queue, 2, 4, lambda rows: 1.0)
    # Each batch runs one program: dense steps, its ideal exactly.
    assert weight_bound["batches"] == 2 and weight_bound["distinct_programs"] == 1
    assert weight_bound["schedule_steps"] == (6 + 2) / 2
    assert weight_bound["share_of_ideal"] == pytest.approx(1.0)
    together = layer_call_cost.queue_estimate(queue, 4, 4, lambda rows: 1.0)
    assert together["schedule_steps"] == 6 and together["share_of_ideal"] < 1


def test_layer_call_cost_interpolates_and_extends_measured_costs():
    cost = _load("layer_call_cost").cost_of_rows({1: 1.0, 4: 1.0, 8: 2.0})
    assert [cost(1), cost(6), cost(8), cost(16)] == pytest.approx([1.0, 1.5, 2.0, 4.0])


@pytest.mark.usefixtures("in_process_engines")
def test_layer_call_cost_benchmark_quick(tmp_path):
    layer_call_cost = _load("layer_call_cost")
    results = layer_call_cost.main(["--quick", "--results-dir", str(tmp_path)])
    assert set(results["per_layer_ms"]) == {"1", "4"}
    assert all(ms > 0 for ms in results["per_layer_ms"].values())
    assert results["read_gbps"] > 0 and results["weight_read_floor_ms"] > 0
    by_mix = {(row["mix"], row["queue_factor"]): row for row in results["rows"]}
    assert set(by_mix) == {(mix, factor) for mix in ("full", "h75", "mixed") for factor in (1, 2)}
    assert by_mix["full", 1]["schedule_steps"] == 30 and by_mix["h75", 1]["schedule_steps"] == 23
    # Homogeneous batches run dense steps on the whole batch: exactly their ideal.
    for mix in ("full", "h75"):
        assert by_mix[mix, 1]["share_of_ideal"] == pytest.approx(1.0)
        assert by_mix[mix, 2]["share_of_ideal"] == pytest.approx(1.0)
    mixed = by_mix["mixed", 1]
    assert mixed["batches"] == 1 and by_mix["mixed", 2]["batches"] == 2
    assert mixed["schedule_steps"] >= mixed["schedule_lower_bound"] > 30
    assert 0 < mixed["share_of_ideal"] < 1.5
    assert json.loads((tmp_path / "layer_call_cost_quick.json").read_text()) == results
    assert (tmp_path / "layer_call_cost_quick.png").stat().st_size > 0


def test_payoff_bound_costs_every_grid_point_against_the_full_program():
    import torch

    payoff_bound = _load("payoff_bound")
    # Candidate 0 is the full program (4 layers), candidate 1 skips two layers but rambles on
    # question 1, where it costs more than the full program.
    lengths = torch.tensor([4, 2])
    cost = torch.tensor([[100.0, 50.0], [100.0, 150.0]])
    correct = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    probs = torch.tensor([[0.5, 0.9], [0.2, 0.1]])
    at_max = torch.tensor([[False, False], [False, True]])
    grid = payoff_bound.costed_grid(probs, correct, cost, lengths, 4, 0, at_max)
    by_point = {(row["length_penalty"], row["margin"]): row for row in grid}
    # A margin of 1 or more always runs the full program: exactly stock's cost.
    always_full = by_point[0.0, max(p for _, p in by_point)]
    assert always_full["relative_cost"] == 1.0 and always_full["mean_layers"] == 4
    # No penalty, no margin: question 0 takes candidate 1 (more likely right), question 1 the
    # full program.
    head_choice = by_point[0.0, 0.0]
    assert head_choice["relative_cost"] == pytest.approx(150 / 200)
    assert head_choice["accuracy"] == 0.5 and head_choice["mean_layers"] == 3
    assert head_choice["at_max_tokens"] == 0.0
    # The strongest penalty sends question 1 to the rambling candidate as well.
    cheapest = by_point[max(penalty for penalty, _ in by_point), -0.3]
    assert cheapest["relative_cost"] == pytest.approx(200 / 200)
    assert cheapest["at_max_tokens"] == 0.5 and cheapest["right_at_max_tokens"] == 0
    line = payoff_bound.frontier(grid)
    assert [row["relative_cost"] for row in line] == sorted(row["relative_cost"] for row in line)
    assert all(a["accuracy"] < b["accuracy"] for a, b in itertools.pairwise(line))
    assert all(
        any(
            f["relative_cost"] <= r["relative_cost"] and f["accuracy"] >= r["accuracy"]
            for f in line
        )
        for r in grid
    )


def test_payoff_ratios_are_the_median_of_each_rounds_ratio_to_the_stock_beside_it():
    predictor_payoff = _load("predictor_payoff")
    stock = {"seconds_by_round": [10.0, 20.0, 10.0], "cold_seconds": 12.0, "layer_tokens": 900.0}
    # The machine slowed down in round 2 for both engines: the round's ratio is unaffected.
    row = {"seconds_by_round": [8.0, 16.0, 12.5], "cold_seconds": 24.0, "layer_tokens": 750.0}
    predictor_payoff.compare_to_stock(row, stock)
    assert row["ratios_by_round"] == pytest.approx([1.25, 1.25, 0.8])
    assert row["ratio_to_stock"] == pytest.approx(1.25)
    assert row["cold_ratio_to_stock"] == pytest.approx(0.5)
    assert row["ideal_ratio"] == pytest.approx(1.2)
    assert row["share_of_ideal"] == pytest.approx(1.25 / 1.2)
