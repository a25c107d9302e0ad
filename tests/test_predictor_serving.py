"""The predictor in the serving path: offline ``LLM`` with ``{"polar": {"predictor": DIR}}``
and ``vllm serve --polar-predictor DIR`` on loopback, checked against the same predictor run
locally and the session's PoLar engine run with the predicted programs; and the clear refusals
of a corrupt predictor and of a predictor made for another model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from engine_checks import generate, vllm_engine
from server_process import failed_starts, polar_metrics, post_json, vllm_server
from vllm import SamplingParams

from polar_vllm import polar_program
from polar_vllm.compat.input_processor import polar_front_end
from polar_vllm.predictor import init_random_predictor, load_predictor, predict_programs
from polar_vllm.program import ProgramError, format_program, parse_program

PROMPTS = (
    "Tom has 7 apples and buys 5 more. How many apples does Tom have now?",
    "A train travels 60 km in 2 hours. What is its speed?",
    "Write a haiku about the sea.",
)
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def predictor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained predictor for SmolLM2 (its programs are arbitrary but valid)."""
    return init_random_predictor(tmp_path_factory.mktemp("predictor"), "smollm2-135m", 30, seed=3)


@pytest.fixture(scope="module")
def expected_programs(predictor_dir: Path) -> dict[str, str]:
    """The predictor's top program for each prompt, computed here without vLLM."""
    predictor = load_predictor(predictor_dir, expected_depth=30)
    ranked = predict_programs(predictor, list(PROMPTS), top_k=1)
    return {
        prompt: format_program(programs[0])
        for prompt, programs in zip(PROMPTS, ranked, strict=True)
    }


@pytest.fixture(scope="module")
def predictor_llm(smollm2_dir: str, predictor_dir: Path) -> Iterator[Any]:
    config = {"polar": {"predictor": str(predictor_dir)}}
    with vllm_engine(smollm2_dir, in_process=True, additional_config=config) as llm:
        yield llm


def test_offline_llm_runs_predicted_programs(predictor_llm, polar_llm, expected_programs):
    for prompt, program in expected_programs.items():
        resolved = polar_program(predictor_llm, prompt)
        assert (resolved.text, resolved.source) == (program, "predictor")
    own = polar_program(predictor_llm, PROMPTS[0], "0-9,8-9,10-29")
    assert (own.text, own.source, len(own.program)) == ("0-9,8-29", "request", 32)
    with pytest.raises(ProgramError, match="depth 30"):
        polar_program(predictor_llm, PROMPTS[0], "0-30")

    # No program: the predictor's, predicted for the whole batch in one call; a request's own
    # program wins over it.
    service = polar_front_end(predictor_llm.llm_engine.input_processor).service
    batches: list[list[str]] = []
    predict = service.predict
    service.predict = lambda texts: batches.append(list(texts)) or predict(texts)
    try:
        predicted = generate(predictor_llm, [(p, None) for p in PROMPTS], MAX_TOKENS)
    finally:
        del service.predict
    assert batches == [list(PROMPTS)]
    expected = generate(polar_llm, list(expected_programs.items()), MAX_TOKENS)
    for got, want in zip(predicted, expected, strict=True):
        assert got.outputs[0].token_ids == want.outputs[0].token_ids
    (own_output,) = generate(predictor_llm, [(PROMPTS[0], "0-9,8-9,10-29")], MAX_TOKENS)
    (own_expected,) = generate(polar_llm, [(PROMPTS[0], "0-9,8-9,10-29")], MAX_TOKENS)
    assert own_output.outputs[0].token_ids == own_expected.outputs[0].token_ids


def test_offline_predictor_reads_polar_question(predictor_llm, polar_llm, expected_programs):
    """A chat-templated prompt carries its question in ``polar_question``: the predictor reads
    the question, not the template, and a question that is not text is refused."""
    templated = [f"<|user|>\n{prompt}\n<|assistant|>\n" for prompt in PROMPTS]
    for text, prompt in zip(templated, PROMPTS, strict=True):
        resolved = polar_program(predictor_llm, text, question=prompt)
        assert resolved.text == expected_programs[prompt]
    params = [
        SamplingParams(max_tokens=MAX_TOKENS, temperature=0, extra_args={"polar_question": p})
        for p in PROMPTS
    ]
    predicted = predictor_llm.generate(templated, params, use_tqdm=False)
    expected = generate(
        polar_llm,
        [(text, expected_programs[p]) for text, p in zip(templated, PROMPTS, strict=True)],
        MAX_TOKENS,
    )
    for got, want in zip(predicted, expected, strict=True):
        assert got.outputs[0].token_ids == want.outputs[0].token_ids
    bad = SamplingParams(max_tokens=2, extra_args={"polar_question": 7})
    with pytest.raises(ValueError, match="polar_question must be text, got int"):
        predictor_llm.generate([templated[0]], bad, use_tqdm=False)


def test_offline_helper_refuses_stock_llm(stock_llm):
    with pytest.raises(ValueError, match="PoLar is off"):
        polar_program(stock_llm, "hello")


@pytest.fixture(scope="module")
def server(smollm2_dir: str, predictor_dir: Path) -> Iterator[str]:
    with vllm_server(smollm2_dir, "--polar-predictor", str(predictor_dir)) as url:
        yield url


def test_server_runs_predicted_programs(server, polar_llm, expected_programs):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    model = client.models.list().data[0].id
    before = polar_metrics(server)
    for prompt, program in expected_programs.items():
        status, route = post_json(f"{server}/polar/program", {"prompt": prompt})
        assert status == 200
        assert (route["program"], route["source"]) == (program, "predictor")
        assert route["executed_layers"] == len(parse_program(program, 30))
        reply = client.completions.create(
            model=model, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0
        )
        (offline,) = generate(polar_llm, [(prompt, program)], MAX_TOKENS)
        assert reply.choices[0].text == offline.outputs[0].text, program

    status, chat = post_json(
        f"{server}/polar/program",
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": PROMPTS[1]},
            ]
        },
    )
    assert status == 200
    assert (chat["program"], chat["source"]) == (expected_programs[PROMPTS[1]], "predictor")
    client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPTS[1]}], max_tokens=2
    )
    own = client.completions.create(
        model=model,
        prompt=PROMPTS[0],
        max_tokens=MAX_TOKENS,
        temperature=0,
        extra_body={"vllm_xargs": {"polar_program": "0-9,8-9,10-29"}},
    )
    (own_offline,) = generate(polar_llm, [(PROMPTS[0], "0-9,8-9,10-29")], MAX_TOKENS)
    assert own.choices[0].text == own_offline.outputs[0].text

    after = polar_metrics(server)
    delta = {key: after[key] - before.get(key, 0.0) for key in after}
    assert delta['polar_requests_total{source="predictor"}'] == len(PROMPTS) + 1
    assert delta['polar_requests_total{source="request"}'] == 1
    assert delta["polar_predictor_latency_seconds_count"] >= 1


def test_server_refuses_corrupt_predictor_or_one_of_another_model(
    smollm2_dir, predictor_dir, tmp_path
):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.yaml").write_text((predictor_dir / "config.yaml").read_text())
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    other = init_random_predictor(tmp_path / "qwen", "qwen2.5-coder-0.5b", 24)
    renamed = init_random_predictor(tmp_path / "renamed", "smollm2-135m", 30)
    config = yaml.safe_load((renamed / "config.yaml").read_text())
    config["model"] = "llama-3.2-3b"
    (renamed / "config.yaml").write_text(yaml.safe_dump(config))
    corrupt_output, other_output, renamed_output = failed_starts(
        smollm2_dir,
        *(["--polar-predictor", str(directory)] for directory in (corrupt, other, renamed)),
    )
    assert "unreadable" in corrupt_output and "model.safetensors" in corrupt_output
    assert "depth 24" in other_output and "depth 30" in other_output
    assert "targets model 'llama-3.2-3b'" in renamed_output
