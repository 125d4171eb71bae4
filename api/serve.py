"""Run the API in one or several processes on one port.

With several processes, the parent owns the listening socket. It accepts each connection and hands it to
the next ready process in turn: the socket itself goes over a Unix socket pair (SCM_RIGHTS), and the
process serves it from then on. The parent is never in the request path, since requests go straight from
the client to the process that holds the connection. Connections are spread evenly: 8 keep-alive clients
over 2 processes give 4 each. SO_REUSEPORT, used before, hashes each connection to a process, so 8
clients split 5/3 or 6/2 about two times in three, and one process got most of the load while the other
idled.

- A process is handed connections only once its app has started (it says so on its socket pair).
- A process that dies takes only its own connections with it. A connection that was on its way to it
  goes to the next process instead, and the parent starts a replacement.
- Unlike `uvicorn --workers N`, this keeps TCP_NODELAY on keep-alive connections (uvicorn issue #3149:
  about 40 ms per request otherwise).

    python -m api.serve --host 127.0.0.1 --port 8000 --processes 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import selectors
import signal
import socket
import sys
from typing import Any

APP = "api.main:app"
READY = b"R"


def listening_socket(host: str, port: int, listen: bool = True) -> socket.socket:
    """A TCP socket bound to host:port; listening at once unless `listen` is False."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(2048)
    return sock


def _child(channel: socket.socket, log_level: str, access_log: bool) -> None:
    """One API process: serves the connections the parent sends over `channel`."""
    import uvicorn

    class HandedServer(uvicorn.Server):
        """A uvicorn server whose connections arrive over a Unix socket instead of from a listener."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=[])  # the app's lifespan; no listener of its own
            if self.should_exit:
                return
            config, loop = self.config, asyncio.get_running_loop()

            def protocol() -> asyncio.Protocol:
                return config.http_protocol_class(  # type: ignore[call-arg]
                    config=config, server_state=self.server_state, app_state=self.lifespan.state
                )

            def receive() -> None:
                try:
                    _, fds, _, _ = socket.recv_fds(channel, 1, 64)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    fds = []
                if not fds:  # the parent is gone: finish what is in flight and stop
                    loop.remove_reader(channel.fileno())
                    self.should_exit = True
                    return
                for fd in fds:
                    connection = socket.socket(fileno=fd)
                    connection.setblocking(False)
                    with contextlib.suppress(OSError):
                        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    loop.create_task(loop.connect_accepted_socket(protocol, connection))

            channel.setblocking(False)
            loop.add_reader(channel.fileno(), receive)
            channel.send(READY)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(channel.fileno())
            await super().shutdown(sockets=sockets)

    config = uvicorn.Config(APP, log_level=log_level, access_log=access_log, lifespan="on")
    HandedServer(config).run()


class _Process:
    """A child process and the parent's end of its socket pair."""

    def __init__(self, context: Any, log_level: str, access_log: bool) -> None:
        self.channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.process = context.Process(target=_child, args=(theirs, log_level, access_log), daemon=False)
        self.process.start()
        theirs.close()
        self.ready = False

    def hand(self, connection: socket.socket) -> bool:
        """Send the connection to this process; False if it cannot take it (it died)."""
        if not self.ready:
            return False
        try:
            socket.send_fds(self.channel, [b"c"], [connection.fileno()])
            return True
        except OSError:
            self.ready = False
            return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.channel.close()


def serve(host: str, port: int, processes: int = 1, log_level: str = "info", access_log: bool = True) -> None:
    """Serve until SIGINT/SIGTERM; with processes > 1, restart any process that exits early."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1, not {processes}")
    if processes == 1:
        import uvicorn

        uvicorn.run(APP, host=host, port=port, log_level=log_level, access_log=access_log)
        return
    # bound now, so a taken port fails at once; listening only once a process can serve
    listener = listening_socket(host, port, listen=False)
    listener.setblocking(False)
    context = multiprocessing.get_context("spawn")  # no forked LightGBM/OpenMP or database state
    children = [_Process(context, log_level, access_log) for _ in range(processes)]
    selector = selectors.DefaultSelector()
    for child in children:
        selector.register(child.channel, selectors.EVENT_READ, child)
    listening = False
    turn = 0
    stopping = False

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def hand(connection: socket.socket) -> None:
        """To the next ready process in turn; closed if none can take it (it was accepted after all)."""
        nonlocal turn
        with connection:
            for step in range(len(children)):
                child = children[(turn + step) % len(children)]
                if child.hand(connection):
                    turn = (turn + step + 1) % len(children)
                    return

    while not stopping:
        for key, _ in selector.select(timeout=0.5):
            if key.data is None:  # the listener: take every waiting connection
                while True:
                    try:
                        connection, _ = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    hand(connection)
                continue
            child = key.data
            try:
                message = child.channel.recv(64)
            except OSError:
                message = b""
            if READY in message:
                child.ready = True
                print(f"api process {child.process.pid} ready", file=sys.stderr, flush=True)
                if not listening:
                    listener.listen(2048)
                    selector.register(listener, selectors.EVENT_READ, None)
                    listening = True
            elif not message:  # its end closed: the process died (or is dying)
                child.ready = False
                selector.unregister(child.channel)
        for index, child in enumerate(children):
            if not child.process.is_alive() and not stopping:
                print(
                    f"api process {child.process.pid} exited with {child.process.exitcode}; restarting it",
                    file=sys.stderr,
                    flush=True,
                )
                with contextlib.suppress(KeyError, ValueError):
                    selector.unregister(child.channel)
                child.close()
                children[index] = _Process(context, log_level, access_log)
                selector.register(children[index].channel, selectors.EVENT_READ, children[index])
    with contextlib.suppress(KeyError, ValueError):
        selector.unregister(listener)
    listener.close()  # no new connections; each process finishes its in-flight requests
    for child in children:
        if child.process.is_alive():
            child.process.terminate()  # SIGTERM: uvicorn finishes in-flight requests, then exits
    for child in children:
        child.process.join(timeout=30)
        if child.process.is_alive():
            child.process.kill()
        child.close()


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
