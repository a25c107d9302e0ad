"""Serving hardening, with one real ``vllm serve --polar-predictor`` on loopback behind an API key
and with small prefill chunks: seeded sampling through chunked prefill, oversized inputs, the
program route's key check, a predictor that fails at request time, and (slow) 240 concurrent
streams of which a fifth are cancelled mid-stream. Stock vLLM's seeded sampling through
chunked prefill is checked offline on the session's stock engine."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import psutil
import pytest
import yaml
from server_process import (
    ServerProcess,
    post_json,
    server_metrics,
    server_process,
)

from polar_vllm.predictor import init_random_predictor

API_KEY = "polar-test-key"
CHUNK_TOKENS = 128
MAX_MODEL_LEN = 2048
PROGRAMS = ("full", "0-9,8-9,10-29", "0-4,8-13,16-21,24-29", "", "0-29,0-29", "0-14,10-29")
LONG_STORY = (
    "Once upon a time in a small village by the sea there lived an old fisherman who went out "
    "every morning before sunrise and came back at noon with a basket of silver fish. "
)


@pytest.fixture(scope="module")
def fragile_predictor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A predictor configured to read questions of up to 2048 encoder tokens, although its
    encoder (MiniLM) has 512 positions: it loads and predicts short prompts, and raises at
    request time on a prompt longer than 512 encoder tokens."""
    directory = tmp_path_factory.mktemp("fragile-predictor")
    init_random_predictor(directory, "smollm2-135m", 30, seed=3)
    config_path = directory / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["max_question_tokens"] = 2048
    config_path.write_text(yaml.safe_dump(config))
    return directory


@pytest.fixture(scope="module")
def server(smollm2_dir: str, fragile_predictor: Path) -> Iterator[ServerProcess]:
    """``vllm serve SmolLM2 --polar-predictor DIR --api-key KEY`` with 128-token prefill chunks
    and a 2048-token context (float32)."""
    flags = (
        "--polar-predictor", str(fragile_predictor), "--api-key", API_KEY,
        "--max-num-batched-tokens", str(CHUNK_TOKENS), "--max-model-len", str(MAX_MODEL_LEN),
    )  # fmt: skip
    with server_process(smollm2_dir, *flags) as running:
        yield running
    assert running.process.returncode == 0, "a server asked to stop exits with status 0"


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def model_name(client: openai.OpenAI) -> str:
    return client.models.list().data[0].id


def _xargs(program: str | None) -> dict[str, Any]:
    return {} if program is None else {"vllm_xargs": {"polar_program": program}}


def _still_serves(client: openai.OpenAI, model: str) -> None:
    reply = client.completions.create(
        model=model, prompt="The capital of France is", max_tokens=4, temperature=0
    )
    assert reply.usage.completion_tokens == 4


def _tree_rss(process_id: int) -> int:
    """Resident memory of a process and all its descendants, in bytes."""
    root = psutil.Process(process_id)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


def test_seeded_request_with_chunked_prefill(client, model_name, tokenizer):
    prompt = LONG_STORY * 8
    assert len(tokenizer(prompt).input_ids) > 2 * CHUNK_TOKENS  # its prefill takes 3 steps

    def sample(seed: int, program: str | None) -> str:
        reply = client.completions.create(
            model=model_name,
            prompt=prompt,
            max_tokens=16,
            temperature=0.8,
            seed=seed,
            extra_body=_xargs(program),
        )
        assert reply.usage.completion_tokens == 16
        return reply.choices[0].text

    # The repeat finds the prompt's blocks in the prefix cache and is not chunked: equal texts
    # mean the discarded draws of the chunked prefill left the seeded stream untouched.
    for program in ("full", "0-9,8-9,10-29"):
        first = sample(7, program)
        assert sample(7, program) == first, program

    async def concurrent() -> list[str]:
        async_client = openai.AsyncOpenAI(
            base_url=client.base_url, api_key=API_KEY, max_retries=0, timeout=300
        )
        async with async_client:
            replies = await asyncio.gather(
                *(
                    async_client.completions.create(
                        model=model_name,
                        prompt=f"{index}. {prompt}",
                        max_tokens=8,
                        temperature=0.8,
                        seed=index,
                        extra_body=_xargs(PROGRAMS[index % len(PROGRAMS)]),
                    )
                    for index in range(4)
                )
            )
        return [reply.choices[0].text for reply in replies]

    together = asyncio.run(concurrent())  # their prefills share 128-token steps
    assert asyncio.run(concurrent()) == together
    _still_serves(client, model_name)


def test_stock_engine_samples_seeded_requests_through_chunked_prefill(stock_llm, tokenizer):
    """PoLar off: a batch of seeded requests with more prompt tokens than one step holds."""
    from vllm import SamplingParams

    prompts = [f"Story {index}. {LONG_STORY * 3}" for index in range(48)]
    budget = stock_llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens
    assert sum(len(tokenizer(p).input_ids) for p in prompts) > budget
    params = [SamplingParams(max_tokens=2, temperature=0.8, seed=i) for i in range(len(prompts))]
    texts = [out.outputs[0].text for out in stock_llm.generate(prompts, params, use_tqdm=False)]
    reversed_run = stock_llm.generate(prompts[::-1], params[::-1], use_tqdm=False)
    assert [out.outputs[0].text for out in reversed_run] == texts[::-1]


def test_oversized_inputs_get_400_quickly(server, client, model_name):
    rss_before = _tree_rss(server.process.pid)
    oversized = {
        "1 MB program text": "0," * 500_000,
        "JSON list of 10^6 items": [0] * 1_000_000,
        "JSON text of 10^6 items": json.dumps([0] * 1_000_000),
    }
    named = {
        "1 MB program text": "text is 1000000 characters, over the limit",
        "JSON list of 10^6 items": "has 1000000 items, but a program runs at most 60 layers",
        "JSON text of 10^6 items": "characters, over the limit",
    }
    for what, program in oversized.items():
        start = time.monotonic()
        with pytest.raises(openai.BadRequestError, match=named[what]):
            client.completions.create(
                model=model_name, prompt="Hi", max_tokens=2, extra_body=_xargs(program)
            )
        assert time.monotonic() - start < 10, what
        start = time.monotonic()
        status, body = post_json(
            f"{server.url}/v1/polar/program",
            {"prompt": "Hi", "polar_program": program},
            api_key=API_KEY,
        )
        assert (status, named[what] in body["error"]) == (400, True), what
        assert time.monotonic() - start < 10, what

    start = time.monotonic()
    with pytest.raises(openai.BadRequestError, match=r"maximum (context|model) length"):
        client.completions.create(
            model=model_name, prompt=LONG_STORY * 80, max_tokens=2, extra_body=_xargs("full")
        )
    assert time.monotonic() - start < 10
    assert _tree_rss(server.process.pid) - rss_before < 256 * 2**20
    _still_serves(client, model_name)


def test_program_route_takes_the_api_key(server, client, model_name):
    for path in ("/v1/polar/program", "/polar/program"):
        url = f"{server.url}{path}"
        assert post_json(url, {"prompt": "hello"})[0] == 401, path
        assert post_json(url, {"prompt": "hello"}, api_key="wrong")[0] == 401, path
        status, body = post_json(url, {"prompt": "hello", "polar_program": "0-9"}, API_KEY)
        assert (status, body["program"], body["source"]) == (200, "0-9", "request"), path
    unkeyed = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        unkeyed.completions.create(model=model_name, prompt="Hi", max_tokens=2)


def test_failing_predictor_falls_back_to_the_default_program(server, client, model_name):
    long_prompt = "word " * 700  # over the encoder's 512 positions, within the model's 2048
    url = f"{server.url}/v1/polar/program"
    before = server_metrics(server.url, "polar_")

    async def route_concurrently() -> list[tuple[int, dict]]:
        bodies = [
            {"prompt": long_prompt},
            {"prompt": "a lone surrogate \ud800 the encoder's tokenizer refuses"},
            {"prompt": "Hi"},
            {"prompt": "Name a color."},
        ]
        return await asyncio.gather(
            *(asyncio.to_thread(post_json, url, body, API_KEY) for body in bodies)
        )

    (too_long, too_long_body), (malformed, malformed_body), *others = asyncio.run(
        route_concurrently()
    )
    assert (too_long, too_long_body["program"], too_long_body["source"]) == (200, "0-29", "default")
    assert "RuntimeError" in too_long_body["predictor_error"]
    assert (malformed, malformed_body["source"]) == (200, "default")
    assert "TypeError" in malformed_body["predictor_error"]
    assert [(status, body["source"]) for status, body in others] == [(200, "predictor")] * 2

    reply = client.completions.create(
        model=model_name, prompt=long_prompt, max_tokens=4, temperature=0
    )
    assert reply.usage.completion_tokens == 4
    after = server_metrics(server.url, "polar_")

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta("polar_predictor_failures_total") == 3  # the route's two, the completion's
    assert delta('polar_requests_total{source="default"}') == 1
    assert delta("polar_executed_layers_sum") == 30
    _still_serves(client, model_name)


def test_prompt_with_a_lone_surrogate_is_http_400(server, client, model_name):
    """A prompt no tokenizer can encode: vLLM's own tokenizer refuses it before the predictor
    sees it, with HTTP 400, for completions and chat alike."""
    text = "a lone surrogate \ud800 in the prompt"  # sent as the JSON escape "\ud800"
    bodies = {
        "/v1/completions": {"model": model_name, "prompt": text, "max_tokens": 2},
        "/v1/chat/completions": {
            "model": model_name,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": 2,
        },
    }
    for path, body in bodies.items():
        assert post_json(f"{server.url}{path}", body, API_KEY)[0] == 400, path
    _still_serves(client, model_name)


ENGINE_LOAD = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc")


def _engine_load(server: ServerProcess) -> dict[str, float]:
    """Running and waiting requests and the share of KV blocks in use, from ``/metrics``."""
    samples = server_metrics(server.url, "vllm:")
    return {
        name.split("{")[0]: value
        for name, value in samples.items()
        if name.split("{")[0] in ENGINE_LOAD
    }


@pytest.mark.slow
def test_240_streams_with_client_cancellations(server, client, model_name):
    """240 concurrent streams with mixed programs; every fifth is closed by the client after
    two chunks, although it asked for 400 tokens. The others all finish; afterwards no request
    runs or waits and no KV block is in use, within seconds (cancelled requests are aborted,
    not run to their end)."""
    total, completed_tokens, cancelled_after = 240, 12, 2

    async def stream(async_client: openai.AsyncOpenAI, index: int) -> tuple[str, int]:
        cancel = index % 5 == 0
        chunks = await async_client.completions.create(
            model=model_name,
            prompt=f"Request {index}: {LONG_STORY[: 40 + index % 80]}",
            max_tokens=400 if cancel else completed_tokens,
            temperature=0,
            stream=True,
            extra_body=_xargs(PROGRAMS[index % len(PROGRAMS)]),
        )
        received, finish = 0, None
        async for chunk in chunks:
            received += 1
            finish = chunk.choices[0].finish_reason or finish
            if cancel and received == cancelled_after:
                await chunks.close()
                return "cancelled", received
        return str(finish), received

    async def run_all() -> list[Any]:
        async_client = openai.AsyncOpenAI(
            base_url=client.base_url, api_key=API_KEY, max_retries=0, timeout=900
        )
        async with async_client:
            return await asyncio.gather(
                *(stream(async_client, index) for index in range(total)), return_exceptions=True
            )

    start = time.monotonic()
    results = asyncio.run(run_all())
    elapsed = time.monotonic() - start
    errors = [result for result in results if isinstance(result, BaseException)]
    assert errors == []
    outcomes = [outcome for outcome, _ in results]
    assert outcomes.count("cancelled") == total // 5
    assert outcomes.count("length") == total - total // 5
    deadline = time.monotonic() + 30
    while any((load := _engine_load(server)).values()) and time.monotonic() < deadline:
        time.sleep(1)
    assert load == dict.fromkeys(ENGINE_LOAD, 0.0), f"{load} after {elapsed:.0f} s of streaming"
    _still_serves(client, model_name)
