"""`recoup serve --processes N`: N API processes on one port (SO_REUSEPORT), restarted when one dies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _children(pid: int) -> list[int]:
    """The API processes under the `serve` parent (multiprocessing's resource tracker aside)."""
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        pids = [int(child) for child in handle.read().split()]
    found = []
    for child in pids:
        try:
            with open(f"/proc/{child}/cmdline", "rb") as handle:
                if b"resource_tracker" not in handle.read():
                    found.append(child)
        except OSError:
            pass
    return found


def _wait_healthy(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer in time")


def test_processes_share_the_port_and_a_dead_one_is_replaced(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "RECOUP_DATABASE_URL": f"sqlite:///{tmp_path / 'recoup.db'}",
        "RECOUP_VAR_DIR": str(tmp_path / "var"),
        "RECOUP_ENV": "development",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "recoup.cli", "serve", "--port", str(port), "--processes", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, time.monotonic() + 90)
        deadline = time.monotonic() + 30
        while len(_children(server.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        first = _children(server.pid)
        assert len(first) == 2
        # every new connection is answered, whichever process the kernel hands it to
        assert all(httpx.get(f"{url}/healthz", timeout=5).status_code == 200 for _ in range(40))
        # one process dies: the other keeps answering and the parent starts a replacement
        os.kill(first[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = _children(server.pid)
            if len(now) == 2 and first[0] not in now:
                break
            time.sleep(0.2)
        assert len(_children(server.pid)) == 2 and first[0] not in _children(server.pid)
        _wait_healthy(url, time.monotonic() + 60)
        assert all(httpx.get(f"{url}/healthz", timeout=5).status_code == 200 for _ in range(40))
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output
    assert "restarting it" in output
