"""Start ``vllm serve`` on loopback for tests, and stop it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

VLLM = str(Path(sys.executable).with_name("vllm"))


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_command(model: str, port: int, *flags: str) -> list[str]:
    """The ``vllm serve`` command line for the tests' settings."""
    return [
        VLLM, "serve", model, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
        "--max-model-len", "512", "--enforce-eager", *flags,
    ]  # fmt: skip


@contextlib.contextmanager
def vllm_server(model: str, *flags: str, timeout: float = 300) -> Iterator[str]:
    """A running server; yields its base URL. The log is printed if it fails to start."""
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"vllm-serve-{port}.log", "w+")  # noqa: SIM115
    process = subprocess.Popen(
        serve_command(model, port, *flags),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"vllm serve exited with {process.returncode}:\n{log.read()}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("vllm serve did not come up") from None
                time.sleep(1)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def failed_start(model: str, *flags: str, timeout: float = 300) -> str:
    """Run ``vllm serve`` expecting it to refuse to start; returns its output."""
    completed = subprocess.run(
        serve_command(model, free_port(), *flags),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"},
    )
    if completed.returncode == 0:
        raise AssertionError("vllm serve started although it should have refused")
    return completed.stdout + completed.stderr


def post_json(url: str, body: dict) -> tuple[int, dict]:
    """POST ``body`` as JSON; the HTTP status and the JSON answer (error answers too)."""
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def polar_metrics(server: str) -> dict[str, float]:
    """The server's ``polar_*`` Prometheus samples, by name with labels."""
    with urllib.request.urlopen(f"{server}/metrics", timeout=30) as response:
        lines = response.read().decode().splitlines()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("polar_")
    }
