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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ServerProcess:
    """A running ``vllm serve``: its base URL, its process (the leader of its own session) and
    its log file."""

    url: str
    process: subprocess.Popen
    log_path: Path

    def session_processes(self) -> list[int]:
        """Live processes of the server's session (the server and everything it started,
        re-parented or not), zombies excluded."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # the process ended meanwhile
                continue
            state, session = fields[0], int(fields[3])  # stat fields 3 and 6
            if session == self.process.pid and state != "Z":
                found.append(int(stat.parent.name))
        return found


@contextlib.contextmanager
def server_process(
    model: str, *flags: str, timeout: float = 300, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """A running server; the log is printed if it fails to start. When the block ends, the
    server is asked to stop (SIGTERM to its main process, which stops the processes it
    started), and after 60 s, or once it has exited, whatever is left of its session is
    killed."""
    port = free_port()
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        **(env or {}),
    }
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"vllm-serve-{port}.log"
    log = open(log_path, "w+")  # noqa: SIM115
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
        yield ServerProcess(url, process, log_path)
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):  # no process of the session is left
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log.close()


@contextlib.contextmanager
def vllm_server(model: str, *flags: str, timeout: float = 300) -> Iterator[str]:
    """A running server (see :func:`server_process`); yields its base URL."""
    with server_process(model, *flags, timeout=timeout) as server:
        yield server.url


def failed_starts(model: str, *flag_sets: Sequence[str], timeout: float = 300) -> list[str]:
    """Run one ``vllm serve`` per flag set, as many at once as there are cores (each spends its
    time importing vLLM on a core of its own), expecting each to refuse to start; their
    outputs, in order."""
    at_once = max(1, len(os.sched_getaffinity(0)))
    outputs = []
    for start in range(0, len(flag_sets), at_once):
        outputs += _refused_starts(model, flag_sets[start : start + at_once], timeout)
    return outputs


def _refused_starts(model: str, flag_sets: Sequence[Sequence[str]], timeout: float) -> list[str]:
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    processes = [
        subprocess.Popen(
            serve_command(model, free_port(), *flags),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for flags in flag_sets
    ]
    outputs = []
    try:
        for flags, process in zip(flag_sets, processes, strict=True):
            output, _ = process.communicate(timeout=timeout)
            if process.returncode == 0:
                raise AssertionError(f"vllm serve {flags} started although it should have refused")
            outputs.append(output)
    finally:
        for process in processes:
            process.kill()
            process.wait()
    return outputs


def failed_start(model: str, *flags: str, timeout: float = 300) -> str:
    """Run ``vllm serve`` expecting it to refuse to start; returns its output."""
    return failed_starts(model, flags, timeout=timeout)[0]


def post_json(url: str, body: dict, api_key: str | None = None) -> tuple[int, dict]:
    """POST ``body`` as JSON (with ``api_key`` as bearer token, if given); the HTTP status and
    the JSON answer (error answers too)."""
    headers = {"Content-Type": "application/json"}
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def server_metrics(server: str, prefix: str) -> dict[str, float]:
    """The server's Prometheus samples whose names start with ``prefix``, by name with
    labels."""
    with urllib.request.urlopen(f"{server}/metrics", timeout=30) as response:
        lines = response.read().decode().splitlines()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith(prefix)
    }


def polar_metrics(server: str) -> dict[str, float]:
    """The server's ``polar_*`` Prometheus samples, by name with labels."""
    return server_metrics(server, "polar_")
