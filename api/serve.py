"""Run the API in one or several processes on one port.

Several processes share the port through SO_REUSEPORT: each binds its own listening socket and the
kernel spreads incoming connections over them. Unlike `uvicorn --workers N` this keeps TCP_NODELAY on
keep-alive connections (uvicorn issue #3149: about 40 ms per request otherwise), needs no supervisor
process in the request path, and a process that dies takes only its own connections with it; the
parent restarts it.

    python -m api.serve --host 127.0.0.1 --port 8000 --processes 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import signal
import socket
import sys
import time
from typing import Any

APP = "api.main:app"


def listening_socket(host: str, port: int, listen: bool = True) -> socket.socket:
    """A socket bound to host:port with SO_REUSEPORT. Without `listen`, the kernel hands it no
    connections until asyncio starts serving on it, i.e. after the app has started: a process being
    (re)started never holds connections in its backlog while its siblings could answer them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _child(host: str, port: int, log_level: str, access_log: bool) -> None:
    import uvicorn

    sock = listening_socket(host, port, listen=False)
    config = uvicorn.Config(APP, log_level=log_level, access_log=access_log, lifespan="on", backlog=2048)
    uvicorn.Server(config).run(sockets=[sock])


def serve(host: str, port: int, processes: int = 1, log_level: str = "info", access_log: bool = True) -> None:
    """Serve until SIGINT/SIGTERM; with processes > 1, restart any process that exits early."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1, not {processes}")
    if processes == 1:
        import uvicorn

        uvicorn.run(APP, host=host, port=port, log_level=log_level, access_log=access_log)
        return
    # fail fast (and clearly) when the port is taken, before starting anything
    listening_socket(host, port).close()
    context = multiprocessing.get_context("spawn")  # no forked LightGBM/OpenMP or database state
    args = (host, port, log_level, access_log)
    children = [context.Process(target=_child, args=args, daemon=False) for _ in range(processes)]
    for child in children:
        child.start()
    stopping = False

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.is_alive():
                child.terminate()  # SIGTERM: uvicorn finishes in-flight requests, then exits

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        for index, child in enumerate(children):
            if not child.is_alive() and not stopping:
                print(
                    f"api process {child.pid} exited with {child.exitcode}; restarting it",
                    file=sys.stderr,
                    flush=True,
                )
                children[index] = context.Process(target=_child, args=args, daemon=False)
                children[index].start()
        time.sleep(0.5)
    for child in children:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--no-access-log", action="store_true")
    args = parser.parse_args()
    serve(args.host, args.port, args.processes, args.log_level, not args.no_access_log)


if __name__ == "__main__":
    main()
