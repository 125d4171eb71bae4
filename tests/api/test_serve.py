"""`recoup serve --processes N`: N API processes (uvicorn workers) on one port, each answering, one that
dies replaced."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow  # `make test` leaves it out; `make test-all` and CI run it


def _children(pid: int) -> list[int]:
    """The API processes under uvicorn's supervisor (multiprocessing's resource tracker aside)."""
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


def _serve(tmp_path: Path, processes: int) -> tuple[subprocess.Popen, int]:
    """`recoup serve` on a free port, on a fresh SQLite database; its output is collected at the end."""
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
        [sys.executable, "-m", "recoup.cli", "serve", "--port", str(port), "--processes", str(processes)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return server, port


def _served_by(server: subprocess.Popen, port: int, connections: int) -> dict[int, int]:
    """Open `connections` keep-alive connections, one request on each (so each is being served), and
    return which API process holds each one (client port -> pid)."""
    clients = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(connections)]
    try:
        for client in clients:
            client.request("GET", "/healthz")
            response = client.getresponse()
            assert response.status == 200 and response.read()
        return _holders(_children(server.pid), port, [client.sock.getsockname()[1] for client in clients])
    finally:
        for client in clients:
            client.close()


def test_processes_share_the_port_and_a_dead_one_is_replaced(tmp_path: Path) -> None:
    server, port = _serve(tmp_path, processes=2)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, time.monotonic() + 90)
        deadline = time.monotonic() + 30
        while len(_children(server.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        first = _children(server.pid)
        assert len(first) == 2
        # every new connection is answered, whichever process it is handed to
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
        # the replacement is handed connections too, once it has started
        serving, deadline = set(), time.monotonic() + 90
        while serving != set(_children(server.pid)) and time.monotonic() < deadline:
            serving = set(_served_by(server, port, 4).values())
            time.sleep(0.5)
        assert serving == set(_children(server.pid)) and first[0] not in serving
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output
    assert "died" in output.lower(), output[-3000:]  # uvicorn says which process died before replacing it


def _holders(children: list[int], server_port: int, client_ports: list[int]) -> dict[int, int]:
    """Which process holds the server side of each client connection (by socket inode, from /proc)."""
    inode_of = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                local, remote = int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)
                if local == server_port and remote in client_ports:
                    inode_of[fields[9]] = remote
    held = {}
    for pid in children:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inode_of:
                held[inode_of[target[8:-1]]] = pid
    return held
