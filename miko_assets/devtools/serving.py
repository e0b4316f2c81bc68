"""Local servers for rigs: free ports on 127.0.0.1, serving an aiohttp app, and running one in a
child process (so its CPU is not counted against a client being measured)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from miko_assets.llm.event_loop import new_event_loop


def bound_socket() -> socket.socket:
    """A socket bound to a free port on 127.0.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (for servers that only take a number)."""
    with bound_socket() as sock:
        return sock.getsockname()[1]


def serve(app: web.Application, **run_app_options: Any) -> None:
    """Serve `app` on a free port of 127.0.0.1, printing `READY <port>` once it listens."""
    sock = bound_socket()
    sock.listen(1024)
    print(f"READY {sock.getsockname()[1]}", flush=True)
    web.run_app(app, sock=sock, access_log=None, print=None, loop=new_event_loop(), **run_app_options)


@contextmanager
def server_process(module: str, *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run `python -m module args...` (a `serve` main) and yield it with its base URL; stopped on exit."""
    process = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline() if process.stdout else ""
        if not line.startswith("READY "):
            raise RuntimeError(f"{module} did not start: {line!r}")
        yield process, f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen) -> None:
    """Terminate `process`, and kill it if it has not ended within 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
