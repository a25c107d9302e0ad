"""Tests for polar_vllm.search: moves, MCTS, batched rounds, resuming, labels, oracle study,
configs and the commands.

Most tests drive the search with a toy generator whose answer depends on the program (a test
double of the generator protocol, not of the model); the end-to-end tests run the bundled
SmolLM2 through the transformers reference generator with tiny budgets."""

from __future__ import annotations

import importlib.util
import json
import math
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from polar_vllm.cli.main import main as cli_main
from polar_vllm.data import MathProblem
from polar_vllm.program import full_program, validate_program
from polar_vllm.search import (
    ActionSpace,
    EvaluationStore,
    MctsSettings,
    ProgramSearch,
    SearchQuestion,
    label_record,
    length_window,
    oracle_study,
    read_label_records,
    search_questions,
    ucb_score,
    write_label_records,
    write_study,
)
from polar_vllm.search.config import load_search_config
from polar_vllm.search.dense import candidate_programs, score_questions
from polar_vllm.search.generation import GenerationRequest
from polar_vllm.search.labels import LabelRecord
from polar_vllm.search.mcts import Node
from polar_vllm.search.pipeline import load_questions
from polar_vllm.search.study import is_loop_only, is_skip_only

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs" / "search"
META = {"model": "toy", "max_tokens": 1}


class Interrupted(Exception):
    """Raised by the toy generator to simulate a crash."""


class ToyGenerator:
    """Generator whose answer depends on the program: the question ``toy k`` is answered
    right ("1") exactly when the program skips layer ``k``; ``fail_at`` makes call number
    ``fail_at`` (0-based) raise :class:`Interrupted`."""

    def __init__(self, depth: int, fail_at: int | None = None) -> None:
        self.depth = depth
        self.fail_at = fail_at
        self.calls: list[list[GenerationRequest]] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise Interrupted
        self.calls.append(list(requests))
        return ["1" if int(r.prompt.split()[1]) not in r.program else "2 apples" for r in requests]

    def pairs(self) -> list[tuple[str, tuple[int, ...]]]:
        """Every (prompt, program) this generator ran."""
        return [(r.prompt, r.program) for call in self.calls for r in call]


def toy_questions(layers: Sequence[int]) -> list[SearchQuestion]:
    """One toy question per entry of ``layers`` (solved by skipping that layer)."""
    out = []
    for n, layer in enumerate(layers):
        problem = MathProblem(f"q{n}", f"toy {layer}", "1", 1 + n % 2, "toy")
        out.append(SearchQuestion(problem, f"toy {layer} question {n}"))
    return out


def toy_run(
    tmp_path: Path,
    generator: ToyGenerator,
    *,
    name: str = "evals.jsonl",
    layers: Sequence[int] = (3, 5, 7, 8, 10),
    settings: MctsSettings | None = None,
    questions_per_round: int | None = None,
    seed: int = 0,
):
    space = ActionSpace(generator.depth, *length_window(generator.depth, 0.65, 1.25))
    return search_questions(
        toy_questions(layers),
        generator,
        space,
        settings or MctsSettings(simulations=12, leaves_per_round=3),
        EvaluationStore(tmp_path / name, META),
        max_tokens=1,
        seed=seed,
        questions_per_round=questions_per_round,
        progress=False,
    )


# --- moves -------------------------------------------------------------------------------


def brute_force_children(space: ActionSpace, program: tuple[int, ...], tree_depth: int) -> set:
    """All programs one move away, by trying every slice (independent of ActionSpace)."""
    sizes = space.max_block if tree_depth < space.block_depth else 1
    out = set()
    for start in range(len(program)):
        for end in range(start + 1, min(start + sizes, len(program)) + 1):
            block = program[start:end]
            if list(block) != list(range(block[0], block[0] + len(block))):
                continue
            for child in (program[:start] + program[end:], program[:end] + block + program[end:]):
                if space.min_length <= len(child) <= space.max_length and all(
                    child.count(layer) <= space.max_passes for layer in child
                ):
                    out.add(child)
    return out


def test_length_window():
    assert length_window(30, 0.65, 1.25) == (20, 37)
    assert length_window(24, 0.65, 1.25) == (16, 30)
    assert length_window(36, 2 / 3, 11 / 9) == (24, 44)
    for bad in ((1.1, 1.2), (0.5, 0.9), (-0.1, 1.0)):
        with pytest.raises(ValueError):
            length_window(30, *bad)
    with pytest.raises(ValueError):
        ActionSpace(depth=10, min_length=11, max_length=12)


def test_children_of_full_program():
    space = ActionSpace(depth=6, min_length=4, max_length=8, max_block=4, block_depth=1)
    full = full_program(6)
    children = space.children(full, 0)
    # skips of 1 or 2 layers (length >= 4), repeats of 1 or 2 layers (length <= 8)
    skips = {c for c in children if len(c) < 6}
    repeats = {c for c in children if len(c) > 6}
    assert len(skips) == 6 + 5 and len(repeats) == 6 + 5
    assert (0, 1, 2, 3, 2, 3, 4, 5) in repeats and (0, 1, 4, 5) in skips
    # deeper than block_depth: single layers only
    assert {len(c) for c in space.children(full, 1)} == {5, 7}
    assert len(children) == len(set(children))


def test_moves_are_legal_on_random_walks():
    rng = random.Random(1)
    for depth, window, max_block, block_depth in ((12, (0.65, 1.25), 4, 2), (7, (0.5, 1.5), 3, 9)):
        space = ActionSpace(depth, *length_window(depth, *window), max_block, block_depth)
        for _ in range(30):
            program = full_program(depth)
            for tree_depth in range(12):
                children = space.children(program, tree_depth)
                assert set(children) == brute_force_children(space, program, tree_depth)
                assert len(children) == len(set(children)) and program not in children
                for child in children:
                    validate_program(child, depth, max_passes=2)
                    assert space.min_length <= len(child) <= space.max_length
                    assert abs(len(child) - len(program)) <= space.block_sizes(tree_depth)[-1]
                if not children:
                    break
                program = rng.choice(children)


def test_no_third_pass():
    space = ActionSpace(depth=4, min_length=2, max_length=8)
    children = space.children((0, 1, 2, 1, 2, 3), 0)
    assert all(c.count(1) <= 2 and c.count(2) <= 2 for c in children)
    assert (0, 1, 2, 1, 2, 3, 3) in children  # layer 3 may still be repeated
    assert (0, 1, 2, 1, 2, 1, 2, 3) not in children


# --- UCB and selection -------------------------------------------------------------------


def test_ucb_score_and_layer_cost():
    settings = MctsSettings(exploration=1.0, layer_cost=5.0)
    long = Node(tuple(range(30)), 1, visits=2, reward=1.0)
    short = Node(tuple(range(26)), 1, visits=2, reward=1.0)
    bonus = math.sqrt(math.log(10) / 2)
    assert ucb_score(long, 10, 30, settings) == pytest.approx(0.5 + bonus - 5.0)
    assert ucb_score(short, 10, 30, settings) == pytest.approx(0.5 + bonus - 5.0 * 26 / 30)
    # equal statistics: the shorter program wins; without the penalty a better mean wins
    better_long = Node(tuple(range(30)), 1, visits=2, reward=2.0)
    assert ucb_score(short, 10, 30, settings) > ucb_score(better_long, 10, 30, settings)
    no_penalty = MctsSettings(layer_cost=0.0)
    assert ucb_score(better_long, 10, 30, no_penalty) > ucb_score(short, 10, 30, no_penalty)


def one_move_apart(space: ActionSpace, parent: tuple, child: tuple) -> bool:
    return any(child in space.children(parent, d) for d in (0, space.block_depth))


def test_selection_descends_or_expands():
    space = ActionSpace(12, *length_window(12, 0.65, 1.25))
    full = full_program(12)
    # never a random expansion: a node with a live child is descended into, so the tree is a chain
    chain = ProgramSearch(
        space, MctsSettings(simulations=6, leaves_per_round=1, random_expand=0), "s"
    )
    assert chain.propose() == [full]
    chain.complete([True])
    previous = full
    for _ in range(6):
        (program,) = chain.propose()
        chain.complete([False])
        assert one_move_apart(space, previous, program)
        previous = program
    assert chain.done and chain.propose() == []
    # always a random expansion: every candidate is a child of the root
    star = ProgramSearch(
        space, MctsSettings(simulations=6, leaves_per_round=2, random_expand=1), "s"
    )
    star.propose()
    star.complete([True])
    while not star.done:
        programs = star.propose()
        assert len(programs) == 2 and all(p in space.children(full, 0) for p in programs)
        star.complete([False] * len(programs))
    assert len(star.evaluated) == 7


def test_layer_cost_drives_search_shorter():
    space = ActionSpace(20, *length_window(20, 0.5, 1.5))

    def mean_length(penalty: float, seed: str) -> float:
        settings = MctsSettings(simulations=60, layer_cost=penalty)
        search = ProgramSearch(space, settings, seed)
        while not search.done:
            search.complete([True] * len(search.propose()))  # every program is right
        return sum(len(p) for p, _ in search.evaluated) / len(search.evaluated)

    for seed in "pqr":
        assert mean_length(5.0, seed) < mean_length(0.0, seed) - 1


def test_search_is_deterministic_and_exhausts_small_spaces():
    space = ActionSpace(12, *length_window(12, 0.65, 1.25))

    def run(seed: str) -> list:
        search = ProgramSearch(space, MctsSettings(simulations=30), seed)
        while not search.done:
            programs = search.propose()
            search.complete([len(p) % 3 == 0 for p in programs])
        return search.evaluated

    assert run("a") == run("a") != run("b")
    assert len(run("a")) == 31 and len({p for p, _ in run("a")}) == 31
    # no legal move at all: only the full program
    stuck = ProgramSearch(ActionSpace(2, 2, 2), MctsSettings(simulations=10), "x")
    stuck.complete([True] * len(stuck.propose()))
    assert stuck.propose() == [] and stuck.done and stuck.exhausted
    # a tiny space is searched completely and nothing twice
    tiny = ActionSpace(3, 2, 4, block_depth=0)
    reachable, frontier = {full_program(3)}, [full_program(3)]
    while frontier:
        program = frontier.pop()
        for child in tiny.children(program, 1):
            if child not in reachable:
                reachable.add(child)
                frontier.append(child)
    search = ProgramSearch(tiny, MctsSettings(simulations=1000), "t")
    while not search.done:
        search.complete([False] * len(search.propose()))
    assert search.exhausted and sorted(p for p, _ in search.evaluated) == sorted(reachable)
    with pytest.raises(RuntimeError):
        search2 = ProgramSearch(tiny, MctsSettings(), "t")
        search2.propose()
        search2.propose()


# --- batched rounds, cache, resuming -----------------------------------------------------


def test_one_generate_call_per_round_with_many_questions(tmp_path):
    generator = ToyGenerator(depth=16)
    results, stats = toy_run(tmp_path, generator)
    # round 1: the 5 full programs; then 4 rounds of 3 leaves for each of the 5 questions
    assert [len(call) for call in generator.calls] == [5, 15, 15, 15, 15]
    assert stats.generate_calls == stats.rounds == 5 and stats.generated == 65
    for call in generator.calls[1:]:
        assert len({r.prompt for r in call}) == 5
    pairs = generator.pairs()
    assert len(pairs) == len(set(pairs))
    for result in results:
        assert len(result.evaluated) == 13 and result.evaluated[0][0] == full_program(16)
        layer = int(result.problem.question.split()[1])
        assert all(ok == (layer not in p) for p, ok in result.evaluated)
    # the search of a question does not depend on which others share its rounds
    for limit in (1, 2):
        other, _ = toy_run(
            tmp_path, ToyGenerator(depth=16), name=f"l{limit}.jsonl", questions_per_round=limit
        )
        assert other == results


def test_resume_after_interruption(tmp_path):
    uninterrupted, _ = toy_run(tmp_path, ToyGenerator(depth=16), name="ref.jsonl")
    crashing = ToyGenerator(depth=16, fail_at=3)
    with pytest.raises(Interrupted):
        toy_run(tmp_path, crashing)
    done_before = crashing.pairs()
    lines = (tmp_path / "evals.jsonl").read_text().splitlines()
    assert len(lines) == 1 + len(done_before) == 1 + 5 + 15 + 15
    with (tmp_path / "evals.jsonl").open("a") as f:
        f.write('{"id": "q0", "program": [0, 1')  # a line cut off by the crash
    resumed = ToyGenerator(depth=16)
    results, stats = toy_run(tmp_path, resumed)
    assert results == uninterrupted
    assert stats.reused == len(done_before) and stats.generated == 65 - len(done_before)
    assert not set(resumed.pairs()) & set(done_before)
    # everything is there now: a third run evaluates nothing
    again = ToyGenerator(depth=16)
    assert toy_run(tmp_path, again)[0] == uninterrupted and again.calls == []
    with pytest.raises(ValueError, match="other settings"):
        EvaluationStore(tmp_path / "evals.jsonl", {**META, "max_tokens": 2})


def test_store_round_trip(tmp_path):
    store = EvaluationStore(tmp_path / "s.jsonl", META)
    assert len(store) == 0 and store.get("q", (0,)) is None
    generator = ToyGenerator(depth=16)
    toy_run(tmp_path, generator, name="s.jsonl", layers=(3,))
    reopened = EvaluationStore(tmp_path / "s.jsonl", META)
    assert reopened.loaded == len(generator.pairs()) == 13
    evaluation = reopened.get("q0", full_program(16))
    assert evaluation is not None and not evaluation.correct and evaluation.text == "2 apples"


# --- dense candidate sets ----------------------------------------------------------------


def test_candidate_programs_are_single_moves_from_full():
    space = ActionSpace(16, *length_window(16, 0.65, 1.25))
    singles = candidate_programs(space, 1)
    full = full_program(16)
    assert singles[0] == full and len(singles) == len(set(singles)) == 1 + 16 + 16
    assert set(singles[1:]) == brute_force_children(
        ActionSpace(16, space.min_length, space.max_length, max_block=1), full, 0
    )
    blocks = candidate_programs(space, 2)
    assert set(singles) < set(blocks) and len(blocks) == 1 + 16 + 16 + 15 + 15
    with pytest.raises(ValueError, match="max_block"):
        candidate_programs(space, -1)
    long_skip = tuple(range(4)) + tuple(range(12, 16))
    extended = candidate_programs(space, 1, [long_skip, singles[3], long_skip])
    assert extended == (*singles, long_skip)  # extras after the moves, each once
    # max_block 0: a chosen candidate set, the full program first
    chosen = candidate_programs(space, 0, [long_skip, full, singles[3], long_skip])
    assert chosen == (full, long_skip, singles[3])


def test_dense_config_candidates(tmp_path):
    config = tmp_path / "dense.yaml"
    config.write_text(
        yaml.safe_dump(
            {"model": "smollm2-135m", "method": "dense", "dense_programs": ["0-3,12-29"]}
        )
    )
    candidates = load_search_config(config).dense_candidates(30)
    assert len(candidates) == 1 + 30 + 30 + 1 and candidates[-1] == (0, 1, 2, 3, *range(12, 30))
    for name in ("train", "val"):
        qwen = load_search_config(CONFIGS / f"qwen_dense_{name}.yaml")
        assert qwen.method == "dense" and qwen.split_part == name
        programs = qwen.dense_candidates(24)
        assert len(programs) == len(set(programs)) == 63
        assert min(map(len, programs)) == 12 and max(map(len, programs)) == 25


def test_dense_scoring_evaluates_every_pair_once_and_resumes(tmp_path):
    space = ActionSpace(16, *length_window(16, 0.65, 1.25))
    programs = candidate_programs(space, 1)
    questions = toy_questions((3, 5, 7, 8, 10))

    def run(generator, name="dense.jsonl"):
        return score_questions(
            questions,
            generator,
            programs,
            EvaluationStore(tmp_path / name, META),
            max_tokens=1,
            questions_per_call=2,
            progress=False,
        )

    crashing = ToyGenerator(depth=16, fail_at=2)
    with pytest.raises(Interrupted):
        run(crashing)
    assert [len(call) for call in crashing.calls] == [2 * len(programs)] * 2
    resumed = ToyGenerator(depth=16)
    results, stats = run(resumed)
    assert stats.generated == len(programs) and stats.reused == 4 * len(programs)
    assert stats.generate_calls == 1 and stats.rounds == 3
    for question, result in zip(questions, results, strict=True):
        layer = int(question.problem.question.split()[1])
        assert [p for p, _ in result.evaluated] == list(programs)
        # toy rule: right exactly when the program skips the question's layer
        assert [ok for _, ok in result.evaluated] == [layer not in p for p in programs]
        assert sum(ok for _, ok in result.evaluated) == 1


def test_split_part_questions_are_disjoint(tmp_path):
    base = {"model": "smollm2-135m", "levels": [1, 2], "questions_per_level": 5}
    parts = {}
    for part in ("train", "val", "test"):
        path = tmp_path / f"{part}.yaml"
        path.write_text(yaml.safe_dump({**base, "split": [6, 5, 5], "split_part": part}))
        parts[part] = load_questions(load_search_config(path))
        assert [p.level for p in parts[part]] == [1, 2] * 5  # levels in turn
    ids = [p.id for part in parts.values() for p in part]
    assert len(ids) == len(set(ids)) == 30
    too_many = tmp_path / "too_many.yaml"
    too_many.write_text(yaml.safe_dump({**base, "split": [4, 1, 1]}))
    with pytest.raises(ValueError, match="fewer than questions_per_level"):
        load_questions(load_search_config(too_many))
    for bad, match in (({"split_part": "dev"}, "split_part"), ({"method": "grid"}, "method")):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({**base, **bad}))
        with pytest.raises(ValueError, match=match):
            load_search_config(path)


# --- labels and the oracle study ---------------------------------------------------------


def test_label_records(tmp_path):
    results, _ = toy_run(tmp_path, ToyGenerator(depth=16))
    records = [label_record(r, "toy-model", 16) for r in results]
    write_label_records(records, tmp_path / "labels.jsonl")
    lines = (tmp_path / "labels.jsonl").read_text().splitlines()
    assert read_label_records([tmp_path / "labels.jsonl"]) == records
    written = [json.loads(line) for line in lines]
    assert written == [record.to_json() for record in records]
    keys = [
        "id",
        "level",
        "question",
        "answer",
        "model",
        "depth",
        "base_correct",
        "evaluated",
        "valid_programs",
    ]
    for record, result in zip(written, results, strict=True):
        assert list(record) == keys
        assert record["model"] == "toy-model" and record["depth"] == 16
        assert record["base_correct"] is False  # the full program runs every layer
        assert record["evaluated"][0] == {"program": list(range(16)), "correct": False}
        assert record["valid_programs"] == [
            e["program"] for e in record["evaluated"] if e["correct"]
        ]
        assert len(record["evaluated"]) == len(result.evaluated)
    assert any(record.valid_programs for record in records)
    # a hand-made record without "evaluated": its valid programs count as evaluated, right
    hand_made = {"id": "h", "question": "?", "model": "m", "depth": 2, "valid_programs": [[1]]}
    assert LabelRecord.from_json(hand_made, "x").evaluated == (((1,), True),)
    for bad, match in (
        ({**hand_made, "depth": 0}, "depth must be an int"),
        ({"id": "h", "depth": 2}, r"missing fields \['question', 'model', 'evaluated'\]"),
        ({**hand_made, "evaluated": [{"program": "0-1"}]}, "evaluated must be a list"),
    ):
        with pytest.raises(ValueError, match=match):
            LabelRecord.from_json(bad, "x")


def record(level, base, valid, depth=4):
    full = tuple(range(depth))
    evaluated = [(full, base)] + [(tuple(p), True) for p in valid if tuple(p) != full]
    return LabelRecord(f"r{level}{base}{len(valid)}", "?", "1", level, "m", depth, base, evaluated)


def test_oracle_study_on_known_records(tmp_path):
    full = [0, 1, 2, 3]
    records = [
        record(1, True, [full, [0, 1, 3]]),  # right, shorter skip-only program
        record(1, False, [[0, 1, 2, 3, 2, 3]]),  # wrong, fixed by a longer loop-only program
        record(1, False, [[0, 1, 1, 3]]),  # wrong, fixed by a skip+loop program of length D
        record(2, False, []),  # wrong, never fixed
        record(2, True, [full, [0, 2, 1, 2, 3]]),  # right; a program outside the PoLar form
    ]
    study = oracle_study(records)
    one, two = study["levels"]["1"], study["levels"]["2"]
    assert one["questions"] == 3 and one["base_accuracy"] == pytest.approx(1 / 3)
    assert one["oracle_accuracy"] == pytest.approx(
        {"skip_only": 1 / 3, "loop_only": 2 / 3, "skip_and_loop": 1.0}
    )
    assert one["right_with_shorter_program"] == 1.0
    assert one["wrong_fixed_within_depth"] == 0.5
    assert one["mean_shortest_valid_length"] == pytest.approx((3 + 6 + 4) / 3)
    # forms: 0-3 keep | 0-1 keep, 2 skip, 3 keep | 0-1 keep, 2-3 repeat | 0 keep, 1 repeat, ...
    segments = one["segments"]
    assert segments["programs"] == 4 and segments["not_polar_form"] == 0
    assert segments["segments"] == 10
    assert segments["length_share"] == pytest.approx({"1": 0.6, "2": 0.3, "3": 0.0, "4": 0.1})
    assert segments["op_share"] == pytest.approx({"skip": 0.2, "keep": 0.6, "repeat": 0.2})
    assert two["base_accuracy"] == 0.5 and two["oracle_accuracy"]["skip_and_loop"] == 0.5
    assert two["right_with_shorter_program"] == 0.0 and two["wrong_fixed_within_depth"] == 0.0
    assert two["segments"]["programs"] == 2 and two["segments"]["not_polar_form"] == 1
    everything = study["all"]
    assert everything["questions"] == 5 and everything["base_accuracy"] == 0.4
    assert everything["oracle_accuracy"]["skip_and_loop"] == 0.8
    assert everything["right_with_shorter_program"] == 0.5
    assert everything["wrong_fixed_within_depth"] == pytest.approx(1 / 3)
    assert oracle_study([record(None, True, [full])])["levels"]["none"]["base_accuracy"] == 1.0
    empty = oracle_study([record(3, False, [])])["levels"]["3"]
    assert (
        empty["right_with_shorter_program"] is None
        and empty["segments"]["length_share"]["1"] is None
    )
    _, json_path, png_path = write_study(records, tmp_path / "study")
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(study))
    assert png_path.read_bytes()[:4] == b"\x89PNG"


def test_program_classes():
    assert is_skip_only([0, 2, 3]) and is_skip_only([0, 1, 2]) and not is_skip_only([0, 1, 1])
    assert is_loop_only([0, 1, 1, 2], 3) and not is_loop_only([0, 2, 2], 3)


# --- configs and the commands ------------------------------------------------------------


def test_configs(tmp_path):
    for name in ("smollm2_oracle", "qwen_oracle", "smoke"):
        config = load_search_config(CONFIGS / f"{name}.yaml")
        assert config.max_tokens >= 1 and config.output_dir.startswith("results/search/")
    assert load_search_config(CONFIGS / "smollm2_oracle.yaml").backend == "vllm"
    qwen = load_search_config(CONFIGS / "qwen_oracle.yaml")
    assert qwen.model == "qwen2.5-coder-0.5b" and qwen.simulations == 100
    space = qwen.action_space(24)
    assert (space.min_length, space.max_length, space.max_block) == (16, 30, 4)
    labels = load_search_config(CONFIGS / "qwen_labels.yaml")
    assert labels.simulations >= 24 and labels.questions_per_level >= 600
    assert labels.split_part == "train" and labels.levels == (1, 2, 3)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: smollm2-135m\nsimulation: 3\n")
    with pytest.raises(ValueError, match="unknown settings"):
        load_search_config(bad)
    bad.write_text("model: smollm2-135m\nbackend: hf\n")
    with pytest.raises(ValueError, match="backend"):
        load_search_config(bad)
    bad.write_text("model: smollm2-135m\nwindow: [1.1, 1.3]\n")
    with pytest.raises(ValueError, match="window"):
        load_search_config(bad)


def test_search_and_study_commands_on_smollm2(tmp_path, capsys):
    settings = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
    settings.update(simulations=2, max_tokens=1, output_dir=str(tmp_path / "out"))
    config = tmp_path / "smoke.yaml"
    config.write_text(yaml.safe_dump(settings))
    cli_main(["search", "--config", str(config), "--no-progress"])
    out = capsys.readouterr().out
    assert "2 questions" in out and "6 evaluated now" in out and "base" in out
    records = read_label_records([tmp_path / "out" / "labels.jsonl"])
    assert [r.id for r in records] == ["gen-L1-s0-00000", "gen-L1-s0-00001"]
    for r in records:
        assert r.model == "smollm2-135m" and r.depth == 30 and r.level == 1
        assert len(r.evaluated) == 3 and r.evaluated[0][0] == tuple(range(30))
        assert r.base_correct == r.evaluated[0][1]
        for program, _ in r.evaluated:
            validate_program(program, 30)
            assert 20 <= len(program) <= 37
    evaluations = (tmp_path / "out" / "evaluations.jsonl").read_text().splitlines()
    assert len(evaluations) == 1 + 6
    cli_main(["search", "--config", str(config), "--no-progress"])  # resumes: nothing to do
    assert "0 evaluated now, 6 from" in capsys.readouterr().out
    assert read_label_records([tmp_path / "out" / "labels.jsonl"]) == records
    cli_main(
        ["study", "--labels", str(tmp_path / "out" / "labels.jsonl"), "--out", str(tmp_path / "s")]
    )
    study = json.loads((tmp_path / "s" / "oracle_study.json").read_text())
    assert study == json.loads((tmp_path / "out" / "study" / "oracle_study.json").read_text())
    assert (tmp_path / "s" / "oracle_study.png").stat().st_size > 0


def test_speed_benchmark_reference_side(tmp_path):
    path = ROOT / "benchmarks" / "search_speed.py"
    spec = importlib.util.spec_from_file_location("benchmarks_search_speed", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    argv = ["--backends", "reference", "--questions", "1", "--programs-per-question", "2"]
    argv += ["--max-tokens", "1", "--results-dir", str(tmp_path), "--tag", "t"]
    results = module.main(argv)
    row = results["backends"]["reference"]
    assert row["programs"] == 2 and row["programs_per_s"] > 0
    assert json.loads((tmp_path / "search_speed_t.json").read_text()) == results
    # --configs: one engine variant per search config, named by file stem, same model only
    parser = module.argparse.ArgumentParser()
    args = parser.parse_args([])
    args.configs = f"{CONFIGS / 'qwen_study.yaml'},{CONFIGS / 'qwen_labels.yaml'}"
    named = module.variants(args, parser)
    assert list(named) == ["qwen_study", "qwen_labels"]
    assert [c.dtype for c in named.values()] == ["float32", "bfloat16"]
    labels_config = load_search_config(CONFIGS / "qwen_labels.yaml")
    assert labels_config.max_num_seqs is not None
    assert named["qwen_labels"].engine_args()["max_num_seqs"] == labels_config.max_num_seqs
    args.configs = f"{CONFIGS / 'qwen_study.yaml'},{CONFIGS / 'smollm2_study.yaml'}"
    with pytest.raises(SystemExit):
        module.variants(args, parser)


class RecordingGenerator:
    """Passes requests through to a real generator and records each call."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.depth = inner.depth
        self.calls: list[list[GenerationRequest]] = []
        self.texts: dict[tuple[str, tuple[int, ...]], str] = {}

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        self.calls.append(list(requests))
        texts = self.inner.generate(requests)
        self.texts.update({(r.prompt, r.program): t for r, t in zip(requests, texts, strict=True)})
        return texts


def test_engine_search_batches_rounds_and_matches_reference(
    polar_llm, reference_model, tokenizer, tmp_path
):
    """MCTS through the real PoLar engine: one engine call per round holding the candidates of
    every active question, and the engine's answers equal the transformers reference's."""
    from polar_vllm.data import build_prompt, generate_problems
    from polar_vllm.search.generation import ReferenceProgramGenerator, VllmProgramGenerator

    problems = generate_problems(1, 3, 7)
    questions = [SearchQuestion(p, build_prompt(p.question, tokenizer)) for p in problems]
    engine = RecordingGenerator(VllmProgramGenerator(polar_llm))
    space = ActionSpace(30, *length_window(30, 0.65, 1.25))
    results, stats = search_questions(
        questions,
        engine,
        space,
        MctsSettings(simulations=6, leaves_per_round=3),
        EvaluationStore(tmp_path / "evals.jsonl", {"model": "smollm2-135m", "max_tokens": 4}),
        max_tokens=4,
        seed=0,
        progress=False,
    )
    assert [len(call) for call in engine.calls] == [3, 9, 9]
    assert all(len({r.prompt for r in call}) == 3 for call in engine.calls)
    assert stats.generate_calls == 3 and stats.generated == 21
    for result in results:
        assert len(result.evaluated) == 7 and result.evaluated[0][0] == full_program(30)
        assert len({program for program, _ in result.evaluated}) == 7
    requests = [r for call in engine.calls for r in call]
    reference = ReferenceProgramGenerator(reference_model, tokenizer).generate(requests)
    same = sum(
        engine.texts[(r.prompt, r.program)] == t for r, t in zip(requests, reference, strict=True)
    )
    assert same >= 0.95 * len(requests)


def test_engine_generator_samples_through_chunked_prefills(polar_llm, tokenizer):
    """Sampled requests with seeds in a batch whose prefills are chunked (more prompt tokens
    than one step's 4096-token budget): every request completes, and each request's sample
    depends on its seed only, not on the batch around it (the same requests in reverse order,
    chunked at other places, give the same texts)."""
    from polar_vllm.data import build_prompt, generate_problems
    from polar_vllm.search.generation import VllmProgramGenerator

    generator = VllmProgramGenerator(polar_llm)
    problems = generate_problems(5, 48, 11)
    prompts = [build_prompt(p.question, tokenizer) for p in problems]
    assert sum(len(tokenizer(p).input_ids) for p in prompts) > 4096
    requests = [
        GenerationRequest(prompt, full_program(30), max_tokens=2, temperature=0.7, seed=index)
        for index, prompt in enumerate(prompts)
    ]
    texts = generator.generate(requests)
    assert len(texts) == len(requests) and all(isinstance(text, str) for text in texts)
    assert generator.generate(requests[::-1]) == texts[::-1]
