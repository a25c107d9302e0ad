"""What ``vllm serve --polar`` does when its engine dies: the engine-core process is killed
while the server is up (SIGKILL, as the kernel's out-of-memory killer would); the server must
exit with a non-zero status and leave no process of its session behind."""

from __future__ import annotations

import time

import openai
import psutil
from server_process import server_process


def _engine_core(server_pid: int) -> psutil.Process:
    found = [
        child
        for child in psutil.Process(server_pid).children(recursive=True)
        if "EngineCore" in " ".join(child.cmdline())
    ]
    assert len(found) == 1, found
    return found[0]


def test_server_exits_nonzero_without_orphans_when_its_engine_dies(smollm2_dir):
    with server_process(smollm2_dir, "--polar") as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        model = client.models.list().data[0].id
        reply = client.completions.create(model=model, prompt="Hi", max_tokens=2)
        assert reply.usage.completion_tokens == 2
        assert len(server.session_processes()) >= 3  # server, engine core, worker

        killed_at = time.monotonic()
        _engine_core(server.process.pid).kill()
        returncode = server.process.wait(timeout=120)
        exited_after = time.monotonic() - killed_at
        deadline = time.monotonic() + 30
        while (left := server.session_processes()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert returncode == 1, f"exit status {returncode} after {exited_after:.1f} s"
        log = server.log_path.read_text()
        assert "the server exits with status 1" in log  # PoLar's exit, not a crash
        assert "\nTraceback" not in log
        assert left == [], [psutil.Process(pid).cmdline() for pid in left]
