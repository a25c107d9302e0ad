"""The PoLar predictor: network, directory format and its errors, training, decoding, evaluation.

Real parts throughout: the MiniLM encoder from its package and, for evaluation, SmolLM2 through
the transformers reference generator. Training runs use a small depth to stay fast on CPU.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from polar_vllm.cli.main import main
from polar_vllm.data import (
    MathProblem,
    answers_match,
    build_prompt,
    extract_answer,
    generate_problems,
    load_jsonl,
)
from polar_vllm.predictor import (
    DecodeOptions,
    PredictorConfig,
    PredictorError,
    init_random_predictor,
    load_predictor,
    predict_programs,
    predict_scored,
    resolve_predictor_dir,
    save_predictor,
    shipped_predictors,
)
from polar_vllm.predictor.candidate_training import (
    GUARD_CHOICE_FILE,
    GUARD_QUANTILES,
    choose_guard,
)
from polar_vllm.predictor.decoding import decode, decode_boundaries
from polar_vllm.predictor.encoder import TextEncoder, resolve_encoder
from polar_vllm.predictor.eval_run import (
    best_static_programs,
    compared_predictors,
    frontier_variants,
)
from polar_vllm.predictor.evaluation import EvalItem, MethodResult, evaluate, summarize
from polar_vllm.predictor.familiarity import (
    GUARD_FILE,
    FamiliarityGuard,
    embed_questions,
    save_guard,
)
from polar_vllm.predictor.labels import build_targets, read_labels
from polar_vllm.predictor.network import PolarHead
from polar_vllm.predictor.overhead import measure_overhead
from polar_vllm.predictor.predictor_config import DEFAULT_GUARD_QUANTILE
from polar_vllm.predictor.run_settings import TrainSettings, load_settings
from polar_vllm.predictor.selection import (
    FALLBACK_ALWAYS,
    OperatingPoint,
    calibrate,
    choose,
    pick_point,
    pick_served,
    rank,
)
from polar_vllm.predictor.static_skip import layer_importance, static_skip_program
from polar_vllm.predictor.storage import build_head
from polar_vllm.predictor.training import encode_set, train_head
from polar_vllm.program import format_program, full_program, parse_program
from polar_vllm.search.config import load_search_config
from polar_vllm.search.generation import GenerationRequest, ReferenceProgramGenerator
from polar_vllm.search.labels import LabelRecord

REPO = Path(__file__).resolve().parents[1]
TOY_DEPTH = 8
APPLE_PROGRAM = "0-3,6-7"  # skip layers 4-5
PEAR_PROGRAM = "0-3,2-3,4-7"  # repeat layers 2-3


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """One torch thread: far faster than two on the small, shared CPUs the tests run on."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def random_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained predictor for SmolLM2 (30 layers)."""
    return init_random_predictor(tmp_path_factory.mktemp("random"), "smollm2-135m", 30, seed=1)


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    """The default frozen encoder."""
    return TextEncoder("all-MiniLM-L6-v2")


# --------------------------------------------------------------------------- network


def test_head_shapes_param_count_and_padding() -> None:
    config = PredictorConfig(model="m", depth=30)
    head = PolarHead(config).eval()
    params = sum(p.numel() for p in head.parameters())
    assert 1_800_000 < params < 2_200_000
    states = torch.randn(2, 7, 384)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    boundary, ops = head(states, mask)
    assert boundary.shape == (2, 30) and ops.shape == (2, 30, 3)
    # Padding is ignored: the short question gives the same logits alone, unpadded.
    alone_boundary, alone_ops = head(states[1:, :4], mask[1:, :4])
    torch.testing.assert_close(boundary[1:], alone_boundary, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ops[1:], alone_ops, atol=1e-5, rtol=1e-5)


def test_encoder_from_package_and_unknown_name(encoder: TextEncoder) -> None:
    assert (resolve_encoder("all-MiniLM-L6-v2") / "config.json").is_file()
    batch = encoder.encode(["How many apples?", "A much longer question about many pears."])
    assert batch.states.shape[0] == 2 and batch.states.shape[2] == 384
    assert batch.mask[0].sum() < batch.mask[1].sum()
    with pytest.raises(PredictorError, match="unknown encoder 'no-such-encoder'"):
        resolve_encoder("no-such-encoder")


# --------------------------------------------------------------------------- directory format


def test_save_load_round_trip(random_dir: Path, tmp_path: Path) -> None:
    predictor = load_predictor(random_dir, expected_depth=30, expected_model="smollm2-135m")
    assert predictor.config.depth == 30 and predictor.config.model == "smollm2-135m"
    copy = save_predictor(tmp_path / "copy", predictor.config, predictor.head)
    again = load_predictor(copy)
    assert again.config == predictor.config
    for name, tensor in predictor.head.state_dict().items():
        assert torch.equal(tensor, again.head.state_dict()[name]), name
    questions = ["Tom has 3 apples and buys 4 more.", "Share 12 pears among 4 friends."]
    programs = predict_programs(predictor, questions, top_k=3)
    assert programs == predict_programs(again, questions, top_k=3)
    assert [len(p) for p in programs] == [3, 3]
    # A served model directory named like the target matches.
    load_predictor(random_dir, expected_model="/models/SmolLM2-135M/")


def _break(directory: Path, how: str) -> None:
    config_path = directory / "config.yaml"
    if how == "missing dir":
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()
    elif how == "missing config":
        config_path.unlink()
    elif how == "missing weights":
        (directory / "model.safetensors").unlink()
    elif how == "corrupt weights":
        data = (directory / "model.safetensors").read_bytes()
        (directory / "model.safetensors").write_bytes(b"\x07garbage" + data[40:200])
    elif how == "bad yaml":
        config_path.write_text("model: [unclosed\ndepth: 30\n")
    elif how == "not a mapping":
        config_path.write_text("- just\n- a list\n")
    else:
        record = yaml.safe_load(config_path.read_text())
        if how == "wrong version":
            record["format_version"] = 99
        elif how == "wrong shape":
            record["d_model"] = 128
        config_path.write_text(yaml.safe_dump(record))


@pytest.mark.parametrize(
    ("how", "kwargs", "message"),
    [
        ("missing dir", {}, r"predictor directory .* does not exist"),
        ("missing config", {}, r"has no config\.yaml \(expected config\.yaml and model"),
        ("missing weights", {}, r"has no model\.safetensors"),
        ("corrupt weights", {}, r"predictor weights .*model\.safetensors are unreadable"),
        ("bad yaml", {}, r"config\.yaml is not valid YAML"),
        ("not a mapping", {}, r"must be a YAML mapping, got list"),
        ("wrong version", {}, r"format_version 99; this polar-vllm reads format_version 1"),
        ("wrong shape", {}, r"tensor '.*' has shape .* expected .* from config\.yaml"),
        (
            "fine",
            {"expected_depth": 24},
            r"trained for a model of depth 30 but the served model has depth 24",
        ),
        (
            "fine",
            {"expected_model": "qwen2.5-coder-0.5b"},
            r"targets model 'smollm2-135m' but the served model is 'qwen2\.5-coder-0\.5b'",
        ),
    ],
)
def test_load_errors(
    random_dir: Path, tmp_path: Path, how: str, kwargs: dict[str, Any], message: str
) -> None:
    directory = tmp_path / "predictor"
    directory.mkdir()
    for name in ("config.yaml", "model.safetensors"):
        (directory / name).write_bytes((random_dir / name).read_bytes())
    _break(directory, how)
    with pytest.raises(PredictorError, match=message) as info:
        load_predictor(directory, **kwargs)
    assert isinstance(info.value, ValueError)


# --------------------------------------------------------------------------- labels and training


def _record(rid: str, question: str, programs: list[str], depth: int = TOY_DEPTH) -> str:
    """A label file line whose valid programs are ``programs`` (all evaluated, all right)."""
    evaluated = tuple((parse_program(p, depth), True) for p in programs)
    return json.dumps(LabelRecord(rid, question, "1", 1, "toy", depth, True, evaluated).to_json())


def test_label_targets_canonical_weights_and_filtering(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    lines = [
        # full, a skip path, a repeat path, and a path outside the PoLar form (1-2 run twice,
        # but not right after each other).
        _record("a", "q a", ["full", "0-5", "0-3,2-3,4-7", "0-3,1-2,4-7"]),
        _record("b", "q b", ["full"]),
        _record("c", "q c", ["2-7,0-1"]),  # nothing fits the form: question dropped
    ]
    path.write_text("\n".join(lines) + "\n\n")
    records = read_labels([path])
    assert [r.id for r in records] == ["a", "b", "c"]
    targets = build_targets(records, model="toy", depth=TOY_DEPTH)
    assert [t.id for t in targets] == ["a", "b"]
    a, b = targets
    assert len(a.paths) == 3  # fewest executed layers first: 0-5 (6), full (8), repeat (10)
    expected = [1 / 2.3, 0.3 / 2.3, 1 / 2.3]
    assert [p.weight for p in a.paths] == pytest.approx(expected)
    assert math.isclose(sum(p.weight for p in a.paths), 1.0)
    assert a.paths[0].boundaries == (True, False, False, False, True, False, True, False)
    assert a.paths[0].layer_ops == (1, 1, 1, 1, 1, 1, 0, 0)  # keep 0-3, keep 4-5, skip 6-7
    assert a.paths[2].layer_ops == (1, 1, 2, 2, 1, 1, 1, 1)
    assert [p.weight for p in b.paths] == [1.0]  # full alone keeps its whole weight
    assert len(build_targets(records, model="toy", depth=TOY_DEPTH, max_paths=1)[0].paths) == 1
    with pytest.raises(PredictorError, match="is for a model of depth 8, expected 30"):
        build_targets(records, model="toy", depth=30)
    with pytest.raises(PredictorError, match="is for model 'toy', expected 'other'"):
        build_targets(records, model="other", depth=TOY_DEPTH)
    path.write_text('{"id": "x"}\n')
    with pytest.raises(PredictorError, match=r"labels\.jsonl:1: missing fields"):
        read_labels([path])


NAMES = ["Tom", "Maria", "Liam", "Aisha", "Noah", "Sofia"]
PHRASES = [
    "{n} has {x} {f} and buys {y} more. How many {f} does {n} have?",
    "A basket holds {x} {f}. {n} adds {y} {f}. How many {f} are in the basket?",
    "{n} picked {x} {f} on Monday and {y} {f} on Tuesday. How many {f} in total?",
    "There are {x} {f} on the table and {n} eats {y} of them. How many {f} are left?",
    "{n} shares {x} {f} equally among {y} friends. How many {f} does each get?",
    "Each box has {x} {f}. How many {f} are in {y} boxes that {n} bought?",
    "{n} sold {x} {f} in the morning and {y} {f} later. How many {f} were sold?",
    "A shop had {x} {f} and got {y} more {f}. How many {f} does the shop have for {n}?",
]
HELD_OUT = [
    "Grace sells {x} {f} at the market. How many {f} remain if she had {y}?",
    "How many {f} does Felix need to fill {x} bowls with {y} {f} each?",
]


def _toy_labels(tmp_path: Path) -> Path:
    lines = []
    for i, name in enumerate(NAMES):
        for j, phrase in enumerate(PHRASES):
            for fruit, program in (("apples", APPLE_PROGRAM), ("pears", PEAR_PROGRAM)):
                text = phrase.format(n=name, x=i + 3, y=j + 2, f=fruit)
                lines.append(_record(f"{fruit}-{i}-{j}", text, [program]))
    path = tmp_path / "toy_labels.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def toy_sets(tmp_path_factory: pytest.TempPathFactory, encoder: TextEncoder) -> Any:
    """Encoded apple/pear training and validation sets (depth 8)."""
    path = _toy_labels(tmp_path_factory.mktemp("toy"))
    targets = build_targets(read_labels([path]), model="toy", depth=TOY_DEPTH)
    return encode_set(targets[:64], encoder, TOY_DEPTH), encode_set(
        targets[64:], encoder, TOY_DEPTH
    )


def test_training_is_reproducible(toy_sets: Any) -> None:
    train, val = toy_sets
    config = PredictorConfig(model="toy", depth=TOY_DEPTH)
    settings = TrainSettings(epochs=2, batch_size=16, seed=3)
    first = train_head(config, train, val, settings).head.state_dict()
    second = train_head(config, train, val, settings).head.state_dict()
    other = train_head(config, train, val, TrainSettings(epochs=2, batch_size=16, seed=4))
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], v) for k, v in other.head.state_dict().items())


def test_training_learns_question_dependent_programs(toy_sets: Any, tmp_path: Path) -> None:
    train, val = toy_sets
    config = PredictorConfig(model="toy", depth=TOY_DEPTH)
    settings = TrainSettings(epochs=10, batch_size=16, seed=0)  # the default lr
    result = train_head(config, train, val, settings)
    history = result.history
    assert history["train_loss"][-1] < 0.6 * history["train_loss"][0]
    assert min(history["val_loss"]) < history["val_loss"][0]
    assert result.best_val_loss == min(history["val_loss"])
    predictor = load_predictor(save_predictor(tmp_path / "toy", config, result.head))
    for fruit, expected in (("apples", APPLE_PROGRAM), ("pears", PEAR_PROGRAM)):
        questions = [p.format(x=7, y=5, f=fruit) for p in HELD_OUT]
        top = [ranked[0] for ranked in predict_programs(predictor, questions)]
        assert [format_program(p) for p in top] == [
            format_program(parse_program(expected, TOY_DEPTH))
        ] * len(questions), fruit


def test_train_and_predict_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = yaml.safe_load((REPO / "configs/predictor/smoke.yaml").read_text())
    settings["train"]["labels"] = [str(REPO / "configs/predictor/smoke_labels.jsonl")]
    settings["train"]["epochs"] = 1
    settings["predictor_dir"] = str(tmp_path / "smoke")
    config_path = tmp_path / "smoke.yaml"
    config_path.write_text(yaml.safe_dump(settings))
    main(["train", "--config", str(config_path)])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["best_epoch"] == 1
    for name in ("config.yaml", "model.safetensors", "loss_curve.png", "train_history.json"):
        assert (tmp_path / "smoke" / name).is_file(), name
    trained = yaml.safe_load((tmp_path / "smoke/config.yaml").read_text())
    assert trained["training"]["train_questions"] == 18
    main(["predict", "--predictor", str(tmp_path / "smoke"), "--question", "2 + 3?"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and lines[0].startswith("1. ") and "/30 layers" in lines[0]

    settings["train"]["levels"] = [2]  # the smoke labels hold 12 questions of each level
    config_path.write_text(yaml.safe_dump(settings))
    main(["train", "--config", str(config_path)])
    trained = yaml.safe_load((tmp_path / "smoke/config.yaml").read_text())
    assert trained["training"]["train_questions"] == 9
    settings["train"]["levels"] = [4]
    config_path.write_text(yaml.safe_dump(settings))
    with pytest.raises(PredictorError, match=r"no records of levels \(4,\)"):
        main(["train", "--config", str(config_path)])


def test_shipped_predictor_by_name(smollm2_dir: str) -> None:
    assert "smollm2-135m" in shipped_predictors()
    predictor = load_predictor("smollm2-135m", expected_depth=30, expected_model=smollm2_dir)
    assert predictor.config.depth == 30 and not predictor.config.training.get("untrained")
    with pytest.raises(PredictorError, match=r"no shipped predictor is named 'nope'.*smollm2-135m"):
        resolve_predictor_dir("nope")


def test_shipped_qwen_predictor_by_name() -> None:
    """The Qwen2.5-Coder predictor ships with both documented operating points, and its
    fallback guarantee holds on its own candidates: a margin of 1 always gives full depth."""
    predictor = load_predictor("qwen2.5-coder-0.5b", expected_depth=24)
    config = predictor.config
    assert config.head == "candidates" and config.candidates[0] == "0-23"
    assert {"accuracy", "efficiency"} <= set(config.operating_points)
    questions = [p.question for level in (1, 2, 3) for p in generate_problems(level, 20, seed=5)]
    never = predictor.with_point(OperatingPoint(length_penalty=3.0, margin=FALLBACK_ALWAYS))
    assert {format_program(r[0]) for r in predict_programs(never, questions)} == {"0-23"}
    # its familiarity guard: training questions are familiar, an unrelated one gets the
    # guard's fallback program (chosen on hand-worded validation questions), unless the
    # operating point never leaves the full program
    guard = predictor.guard
    assert guard is not None and 0.5 < guard.threshold < 0.9
    labels = REPO / "benchmarks/results/search/qwen2.5-coder-dense-train/labels.jsonl"
    train = [record.question for record in read_labels([str(labels)])[::200]]
    familiarity = guard.familiarity(embed_questions(predictor.encoder, [*train, UNRELATED]))
    assert familiarity[-1] < guard.threshold < float(familiarity[:-1].min())
    choice = json.loads(
        (resolve_predictor_dir("qwen2.5-coder-0.5b") / GUARD_CHOICE_FILE).read_text()
    )
    assert (guard.fallback or "full") == choice["chosen_fallback"]
    fallback = guard.fallback or "0-23"
    assert format_program(predict_programs(predictor, [UNRELATED])[0][0]) == fallback
    assert format_program(predict_programs(never, [UNRELATED])[0][0]) == "0-23"


def test_run_configs_parse(tmp_path: Path) -> None:
    for name in ("smollm2", "smoke"):
        settings = load_settings(REPO / f"configs/predictor/{name}.yaml")
        assert settings.model == "smollm2-135m"
    qwen = load_settings(REPO / "configs/predictor/qwen.yaml")
    assert qwen.train.head == "candidates" and qwen.eval.count_per_level >= 50
    labelled = {*qwen.train.labels, *qwen.train.val_labels, *qwen.train.family_labels}
    assert set(qwen.eval.dense_labels) == labelled == set(qwen.eval.exclude_labels)
    # the held-out family is in no label run, and every trained family is evaluated
    assert qwen.train.gate_by_family and qwen.eval.ood_families == ("first_person",)
    families = {load_search_config(REPO / "configs/search/qwen_dense_wordings.yaml").families}
    assert families == {qwen.eval.families} and "first_person" not in qwen.eval.families
    mcts = load_settings(REPO / "configs/predictor/qwen_mcts.yaml")
    assert mcts.train.head == "polar_form" and mcts.train.val_labels == qwen.train.val_labels
    # the guard's hand-worded validation questions are not the hand-worded test questions
    guard_file = REPO / "configs/predictor/qwen_ood_val.jsonl"
    guard_questions = {p.question for p in load_jsonl(guard_file)}
    test_questions = {p.question for f in qwen.eval.ood_files for p in load_jsonl(REPO / f)}
    assert qwen.train.guard_val_labels and len(guard_questions) == 60
    assert not guard_questions & test_questions
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: m\npredictor_dir: d\ntrain: {head: tree}\n")
    with pytest.raises(PredictorError, match="train head must be one of"):
        load_settings(bad)
    bad.write_text("model: m\npredictor_dir: d\ntrain: {epoch: 3}\n")
    with pytest.raises(PredictorError, match=r"train has unknown keys \['epoch'\]"):
        load_settings(bad)
    bad.write_text("model: m\npredictor_dir: d\neval: {backend: reference}\n")
    with pytest.raises(PredictorError, match="reference backend is greedy only"):
        load_settings(bad)


# --------------------------------------------------------------------------- decoding


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_boundaries_threshold_and_splitting() -> None:
    logits = [-5.0, _logit(0.51), _logit(0.5), -3.0, -3.0, -3.0, -3.0, -3.0, 2.0, -2.0]
    bits = decode_boundaries(logits)
    # layer 0 always; 0.51 > 0.5 starts one, exactly 0.5 does not; 1..7 (7 layers) splits 4 + 3.
    assert bits == (True, True, False, False, False, True, False, False, True, False)
    assert decode_boundaries([-9.0] * 9, max_segment_len=4) == (
        (True, False, False, False) * 2 + (True,)
    )
    assert decode_boundaries([9.0] * 3, threshold=0.9) == (True, True, True)


def _ops(rows: list[tuple[float, float, float]]) -> torch.Tensor:
    return torch.log(torch.tensor(rows, dtype=torch.float64))


def test_beam_search_ranks_and_length_aware_preference() -> None:
    depth = 4
    boundary = torch.tensor([9.0, -9.0, 9.0, -9.0])  # segments 0-1 and 2-3
    op = _ops([(0.1, 0.6, 0.3), (0.1, 0.6, 0.3), (0.45, 0.46, 0.09), (0.45, 0.46, 0.09)])
    ranked = decode(boundary, op, DecodeOptions(beam_width=5))
    programs = [format_program(r.program) for r in ranked]
    # top-2 ops per segment: {keep, repeat} x {keep, skip}, by summed log-probability
    assert programs == ["0-3", "0-1", "0-1,0-3", "0-1,0-1"]
    scores = [r.score for r in ranked]
    assert scores == sorted(scores, reverse=True)
    assert math.isclose(scores[0], math.log(0.6) + math.log(0.46))
    assert len(decode(boundary, op, DecodeOptions(beam_width=2))) == 2
    # Keep barely beats skip on segment 2-3; length-aware decoding prefers running fewer layers.
    aware = decode(boundary, op, DecodeOptions(length_aware=True, length_penalty=0.1))
    assert format_program(aware[0].program) == "0-1"
    assert len(aware[0].program) < len(ranked[0].program)
    # Exactly equal scores: skip (fewer layers) wins under length-aware decoding.
    tie = _ops([(0.5, 0.5, 1e-9)] * depth)
    aware_tie = decode(torch.tensor([9.0, -9.0, -9.0, -9.0]), tie, DecodeOptions(length_aware=True))
    assert aware_tie[0].program == ()


def test_predict_batched_equals_single_and_length_aware(random_dir: Path) -> None:
    predictor = load_predictor(random_dir)
    questions = [f"Noah has {n} marbles and loses {n - 1}. How many are left?" for n in (3, 9, 20)]
    batched = predict_programs(predictor, questions, top_k=5)
    single = [predict_programs(predictor, [q], top_k=5)[0] for q in questions]
    assert batched == single
    assert all(1 <= len(ranked) <= 5 for ranked in batched)
    for ranked in predict_scored(predictor, questions, top_k=5, length_aware=True):
        assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        predict_programs(predictor, questions, top_k=0)


def test_overhead_measurement(random_dir: Path) -> None:
    predictor = load_predictor(random_dir)
    result = measure_overhead(predictor, ["What is 2 + 2?"] * 4, repeats=1)
    assert result["batch_size"] == 4
    assert result["total_ms"] == pytest.approx(
        result["encoder_ms"] + result["head_ms"] + result["decoding_ms"]
    )
    assert all(result[k] > 0 for k in ("encoder_ms", "head_ms", "decoding_ms"))


# --------------------------------------------------------------------------- baselines and eval


def test_static_skip_selection(reference_model: Any, tokenizer: Any) -> None:
    assert static_skip_program([0.5, 0.1, 0.3, 0.1, 0.9], 2) == (0, 2, 4)
    assert static_skip_program([0.2] * 4, 0) == (0, 1, 2, 3)
    with pytest.raises(ValueError, match=r"must drop 0\.\.3 layers"):
        static_skip_program([0.2] * 4, 4)
    prompts = [build_prompt(q, tokenizer) for q in ("What is 3 + 4?", "Tom has 5 pens.")]
    importance = layer_importance(reference_model, tokenizer, prompts)
    assert len(importance) == 30
    assert all(0.0 <= value <= 2.0 for value in importance)
    program = static_skip_program(importance, 3)
    dropped = set(range(30)) - set(program)
    assert len(program) == 27 and max(importance[i] for i in dropped) <= min(
        importance[i] for i in program
    )


def test_method_result_pass_at_k() -> None:
    greedy = MethodResult([False, True, True], [30, 26, 28], ["0-29", "x", "y"])
    assert greedy.pass1 == 0.0 and greedy.pass5 == 1.0
    sampled = MethodResult([True, False, False, True, False], [30] * 5, ["0-29"] * 5, True)
    assert sampled.pass1 == 0.4 and sampled.pass5 == 1.0
    late = MethodResult([False] * 5 + [True], [30] * 6, ["0-29"] * 6)
    assert late.pass5 == 0.0  # only the first 5 attempts count


def test_eval_metrics_on_reference_generator(
    reference_model: Any, tokenizer: Any, random_dir: Path
) -> None:
    generator = ReferenceProgramGenerator(reference_model, tokenizer)
    predictor = load_predictor(random_dir, expected_depth=30, expected_model="smollm2-135m")
    items = [
        EvalItem(MathProblem("p1", "What is 2 + 3?", "5", 1, "test"), "level 1"),
        EvalItem(MathProblem("p2", "What is 10 - 4?", "6", 2, "test"), "ood level 2", ood=True),
    ]
    static = tuple(i for i in range(30) if i not in (26, 27))
    results = evaluate(
        generator, tokenizer, predictor, items, max_tokens=4, top_k=2, static_program=static
    )
    groups = results["groups"]
    assert set(groups) == {"level 1", "ood level 2", "in_distribution", "ood"}
    assert set(groups["level 1"]) == {"greedy_full", "static_skip", "polar"}
    assert results["best_temperature"] is None and results["sampling_grid"] == {}
    # Recompute greedy and polar answers independently through the generator.
    for index, item in enumerate(items):
        group = groups[item.group]
        prompt = build_prompt(item.problem.question, tokenizer)
        text = generator.generate([GenerationRequest(prompt, full_program(30), 4)])[0]
        expected = float(answers_match(extract_answer(text), item.problem.answer))
        assert group["greedy_full"]["pass@1"] == expected
        assert group["greedy_full"]["pass@5"] == expected
        assert group["greedy_full"]["avg_layers"] == 30
        assert group["static_skip"]["avg_layers"] == 28
        record = results["items"][index]
        top = predict_programs(predictor, [item.problem.question], top_k=2)[0]
        assert record["polar"]["programs"] == [format_program(p) for p in top]
        assert group["polar"]["avg_layers"] == len(top[0])
        assert group["polar"]["pass@1"] == float(record["polar"]["correct"][0])
        assert group["polar"]["pass@5"] == float(any(record["polar"]["correct"]))
    overall = summarize(items, {"x": [MethodResult([True], [30], ["0-29"])] * 2})
    assert overall["in_distribution"]["x"]["n"] == 1 and overall["ood"]["x"]["pass@1"] == 1.0


def test_compared_predictors_are_named_variants_checked_against_the_model(
    random_dir: Path,
) -> None:
    compared = compared_predictors([str(random_dir)], 30, "smollm2-135m")
    assert list(compared) == [f"polar[{random_dir.name}]"]
    question = "What is 2 + 3?"
    assert predict_programs(compared[f"polar[{random_dir.name}]"], [question]) == predict_programs(
        load_predictor(random_dir), [question]
    )
    with pytest.raises(PredictorError, match="depth"):
        compared_predictors([str(random_dir)], 24, "smollm2-135m")


# --------------------------------------------------------------------------- candidate head

NEVER_PROGRAM = "0-1,4-7"  # right for no question


def _dense_record(rid: str, question: str, right: set[str]) -> str:
    """A dense label record: every toy candidate evaluated, ``right`` the correct ones."""
    evaluated = tuple(
        (parse_program(p, TOY_DEPTH), p in right)
        for p in ("full", APPLE_PROGRAM, PEAR_PROGRAM, NEVER_PROGRAM)
    )
    record = LabelRecord(rid, question, "1", 1, "toy", TOY_DEPTH, "full" in right, evaluated)
    return json.dumps(record.to_json())


def _dense_labels(path: Path, phrases: list[str], names: list[str]) -> Path:
    """Apple questions are right under the apple program, pear ones under the pear program;
    the full program is right on one question in three."""
    lines = []
    for i, name in enumerate(names):
        for j, phrase in enumerate(phrases):
            for fruit, program in (("apples", APPLE_PROGRAM), ("pears", PEAR_PROGRAM)):
                right = {program} | ({"full"} if (i + j) % 3 == 0 else set())
                text = phrase.format(n=name, x=i + 3, y=j + 2, f=fruit)
                lines.append(_dense_record(f"{fruit}-{name}-{j}", text, right))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_oracle_summary_on_searched_test_questions() -> None:
    """The oracle counts a question solved when any searched program is right, charges the
    shortest right program's layers (full depth when none), and puts the methods beside it
    on exactly the searched questions."""
    from polar_vllm.predictor.oracle import oracle_summary

    def record(qid: str, evaluated: list[tuple[str, bool]]) -> LabelRecord:
        programs = tuple((parse_program(p, 8), right) for p, right in evaluated)
        return LabelRecord(qid, f"q {qid}", "1", 1, "toy", 8, evaluated[0][1], programs)

    records = [
        record("a", [("0-7", False), ("0-5", True), ("0-3,3-7", True)]),
        record("b", [("0-7", False), ("0-6", False)]),
        record("z", [("0-7", True)]),  # not evaluated: ignored
    ]

    def method(right: bool, layers: int) -> dict[str, Any]:
        return asdict(MethodResult([right], [layers], ["p"]))

    items = [
        {"id": "a", "group": "level 1", "greedy_full": method(False, 8), "polar": method(1, 6)},
        {"id": "b", "group": "level 1", "greedy_full": method(True, 8), "polar": method(0, 7)},
        {"id": "c", "group": "level 1", "greedy_full": method(True, 8), "polar": method(1, 8)},
    ]
    oracle = oracle_summary(records, items, 8)
    assert (oracle["questions"], oracle["pass@1"], oracle["avg_layers"]) == (2, 0.5, 7.0)
    assert oracle["methods"]["greedy_full"] == {"pass@1": 0.5, "avg_layers": 8.0}
    assert oracle["methods"]["polar"] == {"pass@1": 0.5, "avg_layers": 6.5}
    with pytest.raises(ValueError, match="no question of the oracle labels"):
        oracle_summary(records[2:], items, 8)


def test_choice_rule_fallback_and_calibration() -> None:
    probs = torch.tensor([[0.5, 0.9, 0.2], [0.6, 0.55, 0.1], [0.3, 0.3, 0.31]])
    lengths = torch.tensor([8, 6, 10])  # candidate 0 is the full program
    assert choose(probs, lengths, 8, 0, OperatingPoint()).tolist() == [1, 0, 2]
    # a margin: switch away from full only when clearly better
    assert choose(probs, lengths, 8, 0, OperatingPoint(margin=0.2)).tolist() == [1, 0, 0]
    # a length penalty with a negative margin trades a little predicted accuracy for layers
    cheap = OperatingPoint(length_penalty=1.0, margin=-0.1)
    assert choose(probs, lengths, 8, 0, cheap).tolist() == [1, 1, 1]
    assert rank(probs, lengths, 8, 0, cheap)[1] == [1, 0, 2]
    # a margin of 1 gives the full program whatever the probabilities
    noisy = torch.rand(500, 3, generator=torch.Generator().manual_seed(0))
    noisy[:, 0] = 0.0
    always = OperatingPoint(length_penalty=3.0, margin=FALLBACK_ALWAYS)
    assert set(choose(noisy, lengths, 8, 0, always).tolist()) == {0}
    correct = torch.tensor([[0, 1, 0], [1, 0, 0], [0, 0, 1]])
    points = calibrate(probs, correct, lengths, 8, 0, penalties=[0.0, 1.0], margins=[-0.1, 0.0])
    assert len(points) == 4
    best = pick_point(points, 8.0)
    assert best.accuracy == 1.0 and best.point == OperatingPoint(0.0, 0.0)
    assert best.mean_layers == pytest.approx(8.0)
    lean = pick_point(points, 7.5)  # (1.0, 0.0): 2 of 3 right in 22 / 3 layers on average
    assert lean.point == OperatingPoint(1.0, 0.0) and lean.mean_layers == pytest.approx(22 / 3)
    assert lean.accuracy == pytest.approx(2 / 3) and lean.full_share == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="at most 5"):
        pick_point(points, 5.0)


def test_candidate_config_checks() -> None:
    good = {"model": "toy", "depth": 4, "head": "candidates", "candidates": ("0-3", "0,2,3")}
    assert PredictorConfig(**good).candidate_program(1) == (0, 2, 3)
    for bad, match in (
        ({"candidates": ("0,2,3",)}, "must include the full program"),
        ({"candidates": ("0-3", "0-3,1")}, "not in PoLar form"),
        ({"candidates": ("0-3", "0-9")}, "0-9"),
        ({"operating_point": "fast"}, "not one of operating_points"),
        ({"head": "polar_form"}, "need head: candidates"),
        ({"head": "tree"}, "head must be one of"),
    ):
        with pytest.raises(PredictorError, match=match):
            PredictorConfig(**{**good, **bad})


def test_candidate_predictor_trains_calibrates_and_falls_back(tmp_path: Path) -> None:
    train = _dense_labels(tmp_path / "dense_train.jsonl", PHRASES, NAMES)
    val = _dense_labels(tmp_path / "dense_val.jsonl", HELD_OUT, ["Omar", "Lena", "Ivan"])
    settings = {
        "model": "toy",
        "predictor_dir": str(tmp_path / "candidates"),
        "train": {
            "head": "candidates",
            "labels": [str(train)],
            "val_labels": [str(val)],
            "epochs": 12,
            "batch_size": 16,
            "efficiency_layers": 0.9,
        },
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(settings))
    main(["train", "--config", str(tmp_path / "run.yaml")])
    directory = tmp_path / "candidates"
    saved = yaml.safe_load((directory / "config.yaml").read_text())
    assert saved["head"] == "candidates" and saved["operating_point"] == "accuracy"
    assert saved["candidates"][0] == format_program(full_program(TOY_DEPTH))
    assert set(saved["operating_points"]) == {"accuracy", "efficiency"}
    frontier = json.loads((directory / "validation_frontier.json").read_text())
    assert frontier["full_program"]["accuracy"] == pytest.approx(1 / 3)
    assert frontier["oracle"] == 1.0
    # on validation questions the learned choice beats the best static candidate and full
    accurate = frontier["operating_points"]["accuracy"]
    assert accurate["accuracy"] == 1.0 > frontier["best_static"]["accuracy"]
    assert frontier["operating_points"]["efficiency"]["mean_layers"] <= 0.9 * TOY_DEPTH
    assert (directory / "validation_frontier.png").read_bytes()[:4] == b"\x89PNG"

    # the most likely right candidate (no length penalty, no margin) is the fruit's program
    saved["operating_points"]["likeliest"] = {"length_penalty": 0.0, "margin": 0.0}
    saved["operating_points"]["never"] = {"length_penalty": 0.0, "margin": FALLBACK_ALWAYS}
    (directory / "config.yaml").write_text(yaml.safe_dump(saved))
    predictor = load_predictor(directory, operating_point="likeliest")
    for fruit, expected in (("apples", APPLE_PROGRAM), ("pears", PEAR_PROGRAM)):
        questions = [p.format(n="Ravi", x=4, y=9, f=fruit) for p in PHRASES[:3]]
        top = [ranked[0] for ranked in predict_programs(predictor, questions, top_k=4)]
        assert top == [parse_program(expected, TOY_DEPTH)] * 3, fruit
    ranked = predict_scored(predictor, ["Tom has 3 apples."], top_k=4)[0]
    assert len({s.program for s in ranked}) == 4 and 0.0 < ranked[0].score < 1.0
    # the fallback: a margin of 1 always runs the full program
    cautious = load_predictor(directory, operating_point="never")
    questions = [p.format(n="Ravi", x=4, y=9, f=f) for p in PHRASES for f in ("apples", "pears")]
    assert {p[0] for p in predict_programs(cautious, questions)} == {full_program(TOY_DEPTH)}
    # evaluation baselines and variants from the same files
    statics = best_static_programs([str(train), str(val)], TOY_DEPTH, 0.9 * TOY_DEPTH)
    # the apple program (6 layers) and the pear program (10) are right equally often: fewer
    # layers win the tie; within 7.2 layers only the apple and never-right programs fit
    assert statics == {
        "best_static": parse_program(APPLE_PROGRAM, TOY_DEPTH),
        "best_static_short": parse_program(APPLE_PROGRAM, TOY_DEPTH),
    }
    variants = frontier_variants(load_predictor(directory), str(directory), 3)
    assert {"polar@efficiency", "polar@likeliest", "polar@never"} < set(variants)
    assert "polar@accuracy" not in variants  # the default point runs as "polar"
    assert 1 <= sum(name.startswith("frontier@") for name in variants) <= 3
    _check_familiarity_guard(directory, tmp_path / "run.yaml", settings)
    with pytest.raises(PredictorError, match="unknown operating point 'fast'"):
        load_predictor(directory, operating_point="fast")
    with pytest.raises(PredictorError, match="operating points belong to candidate"):
        init_random_predictor(tmp_path / "r", "toy", TOY_DEPTH)
        load_predictor(tmp_path / "r", operating_point="accuracy")


UNRELATED = "Translate the greeting good morning into Spanish and French, please."


def _check_familiarity_guard(directory: Path, run_file: Path, settings: dict[str, Any]) -> None:
    """Training fitted the guard: its threshold is the 1% quantile of the validation
    questions' familiarity; an unfamiliar question gets the full program first, familiar ones
    the head's choice; ``fit-guard`` with a null quantile removes it."""
    predictor = load_predictor(directory, operating_point="likeliest")
    guard = predictor.guard
    assert guard is not None and guard.quantile == DEFAULT_GUARD_QUANTILE
    val_questions = [r.question for r in read_labels(settings["train"]["val_labels"])]
    val_familiarity = guard.familiarity(embed_questions(predictor.encoder, val_questions))
    assert guard.threshold == pytest.approx(float(torch.quantile(val_familiarity, 0.01)))
    assert int((val_familiarity < guard.threshold).sum()) <= 1  # the least familiar only
    familiar = [p.format(n="Ravi", x=4, y=9, f=f) for p in PHRASES for f in ("apples", "pears")]
    questions = [*familiar, UNRELATED]
    scores = guard.familiarity(embed_questions(predictor.encoder, questions))
    assert bool((scores[:-1] >= guard.threshold).all()) and scores[-1] < guard.threshold
    unguarded = copy.copy(predictor)
    unguarded.guard = None
    guarded_top = [r[0] for r in predict_programs(predictor, questions, top_k=3)]
    assert guarded_top[:-1] == [r[0] for r in predict_programs(unguarded, familiar)]
    assert guarded_top[-1] == full_program(TOY_DEPTH)
    # the rest of the unfamiliar question's ranking keeps the head's order, full removed
    ranked = predict_programs(predictor, [UNRELATED], top_k=4)[0]
    expected = predict_programs(unguarded, [UNRELATED], top_k=4)[0]
    assert ranked[1:] == [p for p in expected if p != full_program(TOY_DEPTH)][:3]
    # a guard with a fallback program gives it to the unfamiliar question; stored and loaded
    apple = parse_program(APPLE_PROGRAM, TOY_DEPTH)
    save_guard(directory, dataclasses.replace(guard, fallback=APPLE_PROGRAM))
    with_fallback = load_predictor(directory, operating_point="likeliest")
    assert with_fallback.guard.fallback == APPLE_PROGRAM
    guarded_top = [r[0] for r in predict_programs(with_fallback, questions, top_k=3)]
    assert guarded_top[:-1] == [r[0] for r in predict_programs(unguarded, familiar)]
    assert guarded_top[-1] == apple
    assert load_predictor(directory, with_guard=False).guard is None
    save_guard(directory, dataclasses.replace(guard, fallback="0-2"))
    with pytest.raises(PredictorError, match="fallback '0-2' is not one of the predictor's"):
        load_predictor(directory)
    save_guard(directory, guard)
    _check_guard_choice(directory, run_file, settings)
    settings["train"]["familiarity_quantile"] = None
    run_file.write_text(yaml.safe_dump(settings))
    main(["fit-guard", "--config", str(run_file)])
    assert not (directory / GUARD_FILE).exists() and load_predictor(directory).guard is None
    assert not (directory / GUARD_CHOICE_FILE).exists()


REWORDED = [
    "Count the {f}: {n} starts with {x} and is handed {y} more. What is the count now?",
    "If {y} {f} join the {x} {f} that {n} keeps in a crate, how many {f} sit in the crate?",
]


def _check_guard_choice(directory: Path, run_file: Path, settings: dict[str, Any]) -> None:
    """With hand-worded validation labels the guard and its fallback program are chosen among
    those that leave every operating point at least as accurate as the full program there (the
    fallback most accurate there, then its smallest quantile), else the least-losing."""
    predictor = load_predictor(directory, with_guard=False)
    fruit_right = _dense_labels(run_file.parent / "reworded_fruit.jsonl", REWORDED, ["Ivy"])
    full_right = run_file.parent / "reworded_full.jsonl"
    full_right.write_text(
        "\n".join(
            _dense_record(f"{f}-{j}", p.format(n="Ivy", x=5, y=3, f=f), {"full"})
            for j, p in enumerate(REWORDED)
            for f in ("apples", "pears")
        )
        + "\n"
    )
    records = read_labels([str(full_right)])
    reference = load_predictor(directory).guard.reference
    never = FamiliarityGuard(reference, -1.01, 0.01)  # below every cosine similarity
    always = FamiliarityGuard(reference, 1.01, 0.5)  # above every cosine similarity
    always_apple = dataclasses.replace(always, fallback=APPLE_PROGRAM)
    guards = [never, always, always_apple]
    # only the full program is right: the head's skips and the apple program lose, so every
    # question must fall back to the full program
    chosen, report = choose_guard(predictor, guards, records)
    assert chosen is always and report["full_program_accuracy"] == 1.0
    assert [row["fallback_share"] for row in report["guards"]] == [0.0, 1.0, 1.0]
    assert [row["safe"] for row in report["guards"]] == [False, True, False]
    # the head's programs are right and the full program is not: no fallback is needed
    chosen, report = choose_guard(predictor, guards, read_labels([str(fruit_right)]))
    assert chosen is never and report["chosen_quantile"] == 0.01
    # only the apple program is right on the reworded questions: it is the fallback to keep,
    # also when in-distribution questions (which only report the guard's cost) lose with it
    apple_right = run_file.parent / "reworded_apple.jsonl"
    apple_right.write_text(
        "\n".join(
            _dense_record(f"{f}-{j}", p.format(n="Ivy", x=5, y=3, f=f), {APPLE_PROGRAM})
            for j, p in enumerate(REWORDED)
            for f in ("apples", "pears")
        )
        + "\n"
    )
    reworded = read_labels([str(apple_right)])
    chosen, report = choose_guard(predictor, guards, reworded)
    assert chosen is always_apple and report["chosen_fallback"] == APPLE_PROGRAM
    pears_right = run_file.parent / "pears_right.jsonl"  # the head's and full program's
    pears_right.write_text(
        "\n".join(
            _dense_record(f"p-{j}", p.format(n="Omar", x=4, y=6, f="pears"), {"full", PEAR_PROGRAM})
            for j, p in enumerate(PHRASES[:6])
        )
        + "\n"
    )
    in_distribution = read_labels([str(pears_right)])
    chosen, report = choose_guard(predictor, guards, reworded, in_distribution)
    assert chosen is always_apple and report["in_distribution_questions"] == len(in_distribution)
    assert report["guards"][2]["pooled_accuracy"]["likeliest"] < 0.5  # the cost it reports
    # of two safe guards with the same fallback, the one taking fewer questions from the head
    never_apple = dataclasses.replace(never, fallback=APPLE_PROGRAM)
    chosen, report = choose_guard(predictor, [always_apple, never_apple], reworded)
    assert chosen is never_apple and all(row["safe"] for row in report["guards"])
    # through fit-guard: both fallbacks at every quantile from the settings' up, and the apple
    # program (the best static candidate of the training and validation questions) kept
    settings["train"]["guard_val_labels"] = [str(apple_right)]
    run_file.write_text(yaml.safe_dump(settings))
    main(["fit-guard", "--config", str(run_file)])
    stored = json.loads((directory / GUARD_CHOICE_FILE).read_text())
    assert [row["quantile"] for row in stored["guards"]] == [
        q for q in GUARD_QUANTILES for _ in "ab"
    ]
    assert {row["fallback"] for row in stored["guards"]} == {"full", APPLE_PROGRAM}
    stored_guard = load_predictor(directory).guard
    assert stored_guard.quantile == stored["chosen_quantile"]
    assert stored_guard.fallback == stored["chosen_fallback"] == APPLE_PROGRAM
    del settings["train"]["guard_val_labels"]


def test_front_end_serves_a_candidate_predictor_at_its_operating_point(tmp_path: Path) -> None:
    """The serving front end loads a candidate predictor at the operating point the PoLar
    settings name: the likeliest candidate at margin 0, the full program at margin 1."""
    from polar_vllm.engine.config import PolarConfig
    from polar_vllm.serving.front_end import PolarFrontEnd

    depth = 30
    skip = "0-11,13-29"
    config = PredictorConfig(
        model="smollm2-135m",
        depth=depth,
        head="candidates",
        candidates=("0-29", skip, "0-9,8-9,10-29"),
        operating_points={
            "likeliest": {"length_penalty": 0.0, "margin": 0.0},
            "never": {"length_penalty": 0.0, "margin": FALLBACK_ALWAYS},
        },
        operating_point="likeliest",
    )
    head = build_head(config)
    with torch.no_grad():  # every question: the skip program is the likeliest to be right
        head.mlp[-1].weight.zero_()
    head.set_base_rates(torch.tensor([0.3, 0.9, 0.2]))
    directory = save_predictor(tmp_path / "candidates", config, head)
    for point, expected in ((None, skip), ("likeliest", skip), ("never", "0-29")):
        settings = {"predictor": str(directory), "operating_point": point}
        polar = PolarConfig.from_dict({k: v for k, v in settings.items() if v}, depth)
        front_end = PolarFrontEnd(polar, "smollm2-135m")
        resolved = front_end.choose({}, lambda: "Tom has 3 apples and buys 2 more.")
        assert resolved.source == "predictor"
        assert resolved.program == parse_program(expected, depth), point
    with pytest.raises(PredictorError, match="unknown operating point 'fast'"):
        PolarFrontEnd(
            PolarConfig.from_dict({"predictor": str(directory), "operating_point": "fast"}, 30),
            "smollm2-135m",
        )


def test_served_choice_is_the_cheapest_point_surely_more_accurate_than_full() -> None:
    # 40 questions, candidate 0 the full program (8 layers, right on the first 10), candidate 1
    # (6 layers) right on the first 30 but costly (it rambles), candidate 2 (4 layers) cheap and
    # right on questions 6 to 15: as often as the full program, on other questions.
    questions = 40
    correct = torch.zeros(questions, 3)
    correct[:10, 0], correct[:30, 1], correct[6:16, 2] = 1.0, 1.0, 1.0
    lengths = torch.tensor([8, 6, 4])
    costs = torch.tensor([[100.0, 110.0, 40.0]]).repeat(questions, 1)
    probs = torch.tensor([[0.5, 0.9, 0.2]]).repeat(questions, 1)
    points = calibrate(probs, correct, lengths, 8, 0, penalties=[0.0, 3.0], margins=[-0.4, 1.0],
                       costs=costs)  # fmt: skip
    by_point = {(p.point.length_penalty, p.point.margin): p for p in points}
    likeliest, cheap = by_point[0.0, -0.4], by_point[3.0, -0.4]
    assert (likeliest.accuracy, likeliest.relative_cost) == pytest.approx((0.75, 1.1))
    assert (cheap.accuracy, cheap.relative_cost) == pytest.approx((0.25, 0.4))
    # the paired gain over the full program: 20 of 40 questions gained, none lost
    assert likeliest.gain_bound == pytest.approx(0.5 - 1.645 * float(torch.tensor(
        [1.0] * 20 + [0.0] * 20).std()) / questions**0.5)  # fmt: skip
    assert by_point[0.0, 1.0].gain_bound == 0.0 and by_point[0.0, 1.0].relative_cost == 1.0
    assert pick_point(points, 8.0) == likeliest  # the most accurate
    # 6 gained and 6 lost: not surely better than the full program
    assert cheap.gain_bound < 0.0
    assert pick_served(points, 8.0) == likeliest
    with pytest.raises(ValueError, match="surely more accurate"):
        pick_served(points, 8.0, min_accuracy=0.8)
    correct[16:30, 2] = 1.0  # now 20 gained and 6 lost of 40: sure enough, and the cheapest
    points = calibrate(probs, correct, lengths, 8, 0, penalties=[0.0, 3.0], margins=[-0.4, 1.0],
                       costs=costs)  # fmt: skip
    assert pick_served(points, 8.0).point == OperatingPoint(3.0, -0.4)
    assert pick_served(points, 8.0, min_accuracy=0.65).point == OperatingPoint(0.0, -0.4)
    with pytest.raises(ValueError, match="calibrated with costs"):
        pick_served(calibrate(probs, correct, lengths, 8, 0), 8.0)
