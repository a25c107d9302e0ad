"""``vllm serve --polar`` on loopback with the official ``openai`` client: chat, completions,
streaming, concurrent requests with different programs, the program route, metrics, bad
input, a bounded load test, and, last, the server's exit when its engine dies. Offline
results come from the session's PoLar engine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import openai
import psutil
import pytest
from engine_checks import generate
from server_process import ServerProcess, failed_start, polar_metrics, post_json, server_process

PROGRAMS = ("full", "0-9,8-9,10-29", "0-4,8-13,16-21,24-29", "", "0-29,0-29", "0-14,10-29")
PROMPTS = ("The capital of France is", "Tom has 7 apples and buys 5 more. Now he has")
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def running_server(smollm2_dir: str) -> Iterator[ServerProcess]:
    """``vllm serve SmolLM2 --polar`` (float32)."""
    with server_process(smollm2_dir, "--polar") as server:
        yield server


@pytest.fixture(scope="module")
def server(running_server: ServerProcess) -> str:
    """The server's base URL."""
    return running_server.url


@pytest.fixture(scope="module")
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def model_name(client: openai.OpenAI) -> str:
    return client.models.list().data[0].id


def _xargs(program: str | None) -> dict[str, Any]:
    return {} if program is None else {"vllm_xargs": {"polar_program": program}}


def _complete(client: openai.OpenAI, model: str, prompt: str, program: str | None) -> Any:
    return client.completions.create(
        model=model,
        prompt=prompt,
        max_tokens=MAX_TOKENS,
        temperature=0,
        extra_body=_xargs(program),
    )


def test_concurrent_completions_equal_offline_results(client, model_name, polar_llm):
    requests = [(prompt, program) for prompt in PROMPTS for program in PROGRAMS]
    offline = generate(polar_llm, requests, MAX_TOKENS)

    async def run_all() -> list[Any]:
        async_client = openai.AsyncOpenAI(base_url=client.base_url, api_key="unused")
        async with async_client:
            return await asyncio.gather(
                *(
                    async_client.completions.create(
                        model=model_name,
                        prompt=prompt,
                        max_tokens=MAX_TOKENS,
                        temperature=0,
                        extra_body=_xargs(program),
                    )
                    for prompt, program in requests
                )
            )

    served = asyncio.run(run_all())
    for (_, program), offline_output, response in zip(requests, offline, served, strict=True):
        assert response.choices[0].text == offline_output.outputs[0].text, program


def test_chat_and_streaming_chat_run_the_program(client, model_name, polar_llm, tokenizer):
    messages = [{"role": "user", "content": "Name a primary color."}]
    chat_prompt = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    for program in ("full", "0-9,8-9,10-29"):
        (offline,) = generate(polar_llm, [(chat_prompt, program)], MAX_TOKENS)
        reply = client.chat.completions.create(
            model=model_name,
            messages=messages,
            max_tokens=MAX_TOKENS,
            temperature=0,
            extra_body=_xargs(program),
        )
        assert reply.choices[0].message.content == offline.outputs[0].text
        stream = client.chat.completions.create(
            model=model_name,
            messages=messages,
            max_tokens=MAX_TOKENS,
            temperature=0,
            stream=True,
            extra_body=_xargs(program),
        )
        streamed = "".join(
            chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices
        )
        assert streamed == offline.outputs[0].text


@pytest.mark.parametrize(
    ("xargs", "named"),
    [
        ({"polar_program": "0-9,x"}, "'x' is malformed"),
        ({"polar_program": "0-29,0-29,5"}, "layer 5 appears 3 times"),
        ({"polar_program": "0-31"}, "depth 30"),
        ({"polar_programme": "full"}, "unknown key"),
    ],
)
def test_bad_program_is_http_400_and_server_keeps_serving(client, model_name, xargs, named):
    with pytest.raises(openai.BadRequestError, match=named):
        client.completions.create(
            model=model_name,
            prompt=PROMPTS[0],
            max_tokens=2,
            extra_body={"vllm_xargs": xargs},
        )
    assert _complete(client, model_name, PROMPTS[0], "0-9,8-29").choices[0].text


def test_program_route(server):
    status, body = post_json(f"{server}/polar/program", {"prompt": "hello"})
    assert status == 200
    assert body == {"program": "0-29", "executed_layers": 30, "depth": 30, "source": "default"}
    status, body = post_json(
        f"{server}/polar/program",
        {"messages": [{"role": "user", "content": "hi"}], "polar_program": "0-9,8-9,10-29"},
    )
    assert (status, body["program"], body["executed_layers"]) == (200, "0-9,8-29", 32)
    assert body["source"] == "request"
    status, body = post_json(f"{server}/polar/program", {"prompt": "x", "polar_program": "0-40"})
    assert status == 400 and "depth 30" in body["error"]
    status, body = post_json(f"{server}/polar/program", {"nothing": 1})
    assert status == 400


def test_metrics_count_requests_and_executed_layers(server, client, model_name):
    before = polar_metrics(server)
    _complete(client, model_name, PROMPTS[0], "0-9,8-9,10-29")
    _complete(client, model_name, PROMPTS[0], None)
    after = polar_metrics(server)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta("polar_executed_layers_count") == 2
    assert delta("polar_executed_layers_sum") == 32 + 30
    assert delta('polar_requests_total{source="request"}') == 1
    assert delta('polar_requests_total{source="default"}') == 1
    assert "polar_predictor_latency_seconds_count" in after


def test_load_200_concurrent_mixed_programs(client, model_name):
    async def run_all() -> list[Any]:
        async_client = openai.AsyncOpenAI(
            base_url=client.base_url, api_key="unused", max_retries=0, timeout=600
        )
        async with async_client:
            return await asyncio.gather(
                *(
                    async_client.completions.create(
                        model=model_name,
                        prompt=f"{PROMPTS[index % 2]} (request {index})",
                        max_tokens=4,
                        temperature=0,
                        extra_body=_xargs(PROGRAMS[index % len(PROGRAMS)]),
                    )
                    for index in range(200)
                ),
                return_exceptions=True,
            )

    responses = asyncio.run(run_all())
    errors = [response for response in responses if isinstance(response, BaseException)]
    assert errors == []
    assert all(len(response.choices) == 1 for response in responses)
    assert all(response.usage.completion_tokens == 4 for response in responses)


def test_server_refuses_missing_predictor_directory(smollm2_dir, tmp_path):
    output = failed_start(smollm2_dir, "--polar-predictor", str(tmp_path / "missing"))
    assert "predictor directory" in output and "does not exist" in output


def _engine_core(server_pid: int) -> psutil.Process:
    found = [
        child
        for child in psutil.Process(server_pid).children(recursive=True)
        if "EngineCore" in " ".join(child.cmdline())
    ]
    assert len(found) == 1, found
    return found[0]


def test_server_exits_nonzero_without_orphans_when_its_engine_dies(
    running_server, client, model_name
):
    """Runs last: it kills the module's server. The engine-core process is killed while the
    server is up (SIGKILL, as the kernel's out-of-memory killer would); the server must exit
    with a non-zero status and leave no process of its session behind."""
    reply = client.completions.create(model=model_name, prompt="Hi", max_tokens=2)
    assert reply.usage.completion_tokens == 2
    assert len(running_server.session_processes()) >= 3  # server, engine core, worker

    killed_at = time.monotonic()
    _engine_core(running_server.process.pid).kill()
    returncode = running_server.process.wait(timeout=120)
    exited_after = time.monotonic() - killed_at
    deadline = time.monotonic() + 30
    while (left := running_server.session_processes()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert returncode == 1, f"exit status {returncode} after {exited_after:.1f} s"
    log = running_server.log_path.read_text()
    assert "the server exits with status 1" in log  # PoLar's exit, not a crash
    assert "\nTraceback" not in log
    assert left == [], [psutil.Process(pid).cmdline() for pid in left]
