"""Run the API in one or several processes on one port.

With several processes, the parent owns the listening socket. It accepts each connection and hands it to
the next ready process in turn: the socket itself goes over a Unix socket pair (SCM_RIGHTS), and the
process serves it from then on. The parent is never in the request path, since requests go straight from
the client to the process that holds the connection. Connections are spread evenly: 8 keep-alive clients
over 2 processes give 4 each. SO_REUSEPORT, used before, hashes each connection to a process: by the
odds of a random split, 8 clients land 5/3 or 6/2 two times in three, and one process got most of the
load while the other idled.

- A process is handed connections only once its app has started (it says so on its socket pair); while
  none can take one, connections wait in the listen backlog.
- A process that dies takes its own connections with it, and those already queued to it; a connection
  the parent cannot send to it goes to the next process. The parent starts a replacement at once if the
  process had started, with a growing delay if it had not, and gives up (exit status 1) after
  `FAILED_STARTS` failed starts in a row.
- A process stopping on its own closes its socket pair first, so the parent hands it nothing more, then
  serves the connections already sent. When the parent stops, it closes the listener and every socket
  pair: each process serves what it was sent and its in-flight requests, then exits.
- Unlike `uvicorn --workers N`, this keeps TCP_NODELAY on keep-alive connections (uvicorn issue #3149:
  about 40 ms per request otherwise).

    python -m api.serve --host 127.0.0.1 --port 8000 --processes 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import selectors
import signal
import socket
import sys
import time
from typing import Any

APP = "api.main:app"
READY = b"R"


def bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port, not listening yet."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _child(channel: socket.socket, log_level: str, access_log: bool) -> None:
    """One API process: serves the connections the parent sends over `channel`."""
    import uvicorn

    log = logging.getLogger("recoup.serve")
    tasks: set[asyncio.Task] = set()

    class HandedServer(uvicorn.Server):
        """A uvicorn server whose connections arrive over a Unix socket instead of from a listener."""

        def _take(self, fds: list[int]) -> None:
            loop = asyncio.get_running_loop()
            config = self.config

            def protocol() -> asyncio.Protocol:
                return config.http_protocol_class(  # type: ignore[call-arg]
                    config=config, server_state=self.server_state, app_state=self.lifespan.state
                )

            for fd in fds:
                connection = socket.socket(fileno=fd)
                connection.setblocking(False)
                task = loop.create_task(loop.connect_accepted_socket(protocol, connection))
                tasks.add(task)
                task.add_done_callback(_settled)

        def _receive(self) -> None:
            try:
                message, fds, flags, _ = socket.recv_fds(channel, 1, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message, fds, flags = b"", [], 0
            if flags & socket.MSG_CTRUNC:  # out of descriptors: this connection is lost, not the parent
                log.warning("a connection was dropped: this process has no file descriptor left")
            if fds:
                self._take(fds)
            if not message:  # the parent closed its end (it is stopping, or gone): finish and stop
                asyncio.get_running_loop().remove_reader(channel.fileno())
                self.should_exit = True

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=[])  # the app's lifespan; no listener of its own
            if self.should_exit:
                return
            channel.setblocking(False)
            asyncio.get_running_loop().add_reader(channel.fileno(), self._receive)
            with contextlib.suppress(OSError):  # a parent already gone shows as end-of-file above
                channel.send(READY)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            # tell the parent first (it sees end-of-file and hands nothing more), then serve what it had
            # already sent: those clients are waiting for an answer
            loop = asyncio.get_running_loop()
            with contextlib.suppress(Exception):
                loop.remove_reader(channel.fileno())
            with contextlib.suppress(OSError):
                channel.shutdown(socket.SHUT_RDWR)
            while True:
                try:
                    _, fds, _, _ = socket.recv_fds(channel, 1, 64)
                except OSError:
                    break
                if not fds:
                    break
                self._take(fds)
            await asyncio.sleep(0.05)  # let the last handed connections read their request
            await super().shutdown(sockets=sockets)

    def _settled(task: asyncio.Task) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("a handed connection could not be served: %s", task.exception())

    config = uvicorn.Config(
        APP, log_level=log_level, access_log=access_log, lifespan="on", timeout_graceful_shutdown=25
    )
    HandedServer(config).run()


class _Process:
    """A child process and the parent's end of its socket pair."""

    def __init__(self, context: Any, log_level: str, access_log: bool) -> None:
        self.channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.channel.setblocking(False)  # a stalled process must never stall the parent
        self.process = context.Process(target=_child, args=(theirs, log_level, access_log), daemon=False)
        self.process.start()
        theirs.close()
        self.ready = False  # it can take connections now
        self.started = False  # its app started (it said ready) at some point

    def hand(self, connection: socket.socket) -> bool:
        """Send the connection to this process; False if it cannot take it now (busy, or dead)."""
        if not self.ready:
            return False
        try:
            socket.send_fds(self.channel, [b"c"], [connection.fileno()])
            return True
        except BlockingIOError:  # its queue is full: skip it this time
            return False
        except (BrokenPipeError, ConnectionResetError):  # it is gone or shutting down
            self.ready = False
            return False
        except OSError as exc:  # anything else: skip it this time, keep it in the rotation
            print(f"could not hand a connection to api process {self.process.pid}: {exc}", file=sys.stderr)
            return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.channel.close()


RESTART_DELAY_MAX = 30.0  # seconds between restarts of a process that keeps failing to start
FAILED_STARTS = 5  # a process that fails this many times in a row without ever starting: give up


def serve(host: str, port: int, processes: int = 1, log_level: str = "info", access_log: bool = True) -> None:
    """Serve until SIGINT/SIGTERM; with processes > 1, restart any process that exits early. Exits with
    an error when a process fails to start `FAILED_STARTS` times in a row (the app cannot start)."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1, not {processes}")
    if processes == 1:
        import uvicorn

        uvicorn.run(APP, host=host, port=port, log_level=log_level, access_log=access_log)
        return
    stopping = False

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # bound now, so a taken port fails at once; listening only once a process can serve
    listener = bound_socket(host, port)
    listener.setblocking(False)
    context = multiprocessing.get_context("spawn")  # no forked LightGBM/OpenMP or database state
    children: list[_Process] = []
    selector = selectors.DefaultSelector()
    failures = [0] * processes  # failed starts in a row, per slot
    restart_at = [0.0] * processes
    watching = False
    turn = 0

    def hand(connection: socket.socket) -> None:
        """To the next ready process in turn; closed if none can take it (it was accepted after all)."""
        nonlocal turn
        with connection:
            for step in range(len(children)):
                child = children[(turn + step) % len(children)]
                if child.hand(connection):
                    turn = (turn + step + 1) % len(children)
                    return

    try:
        for _ in range(processes):
            children.append(_Process(context, log_level, access_log))
            selector.register(children[-1].channel, selectors.EVENT_READ, children[-1])
        while not stopping:
            for key, _ in selector.select(timeout=0.5):
                if key.data is None:  # the listener: take every waiting connection
                    while True:
                        try:
                            connection, _ = listener.accept()
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError as exc:  # out of descriptors, say: leave the rest in the backlog
                            print(f"could not accept a connection: {exc}", file=sys.stderr, flush=True)
                            time.sleep(0.1)
                            break
                        hand(connection)
                    continue
                child = key.data
                try:
                    message = child.channel.recv(64)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    message = b""
                if READY in message:
                    child.ready = child.started = True
                    print(f"api process {child.process.pid} ready", file=sys.stderr, flush=True)
                elif not message:  # its end closed: the process is stopping or died
                    child.ready = False
                    selector.unregister(child.channel)
            # watch the listener only while some process can take a connection; otherwise they wait
            # in the backlog instead of being accepted and closed
            ready = any(child.ready for child in children)
            if ready and not watching:
                listener.listen(2048)  # from the first ready process on (again: a no-op)
                selector.register(listener, selectors.EVENT_READ, None)
                watching = True
            elif watching and not ready:
                selector.unregister(listener)
                watching = False
            now = time.monotonic()
            for index, child in enumerate(children):
                if child.process.is_alive() or stopping:
                    continue
                if restart_at[index] == 0.0:  # just found dead
                    with contextlib.suppress(KeyError, ValueError):
                        selector.unregister(child.channel)
                    child.close()
                    failures[index] = 0 if child.started else failures[index] + 1
                    if failures[index] >= FAILED_STARTS:
                        raise SystemExit(
                            f"api process failed to start {failures[index]} times in a row (exit code "
                            f"{child.process.exitcode}); see its log above"
                        )
                    delay = min(0.5 * 2.0 ** failures[index], RESTART_DELAY_MAX) if failures[index] else 0.0
                    restart_at[index] = now + delay
                    print(
                        f"api process {child.process.pid} exited with {child.process.exitcode}; restarting it"
                        + (f" in {delay:.0f} s" if delay else ""),
                        file=sys.stderr,
                        flush=True,
                    )
                if now >= restart_at[index]:
                    restart_at[index] = 0.0
                    children[index] = _Process(context, log_level, access_log)
                    selector.register(children[index].channel, selectors.EVENT_READ, children[index])
    finally:
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(listener)
        listener.close()  # no new connections
        # end-of-file on each socket pair after the connections already queued to it: each process
        # serves those and its in-flight requests, then exits; a signal only for those that do not
        for child in children:
            with contextlib.suppress(OSError):
                child.channel.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + 30
        for child in children:
            child.process.join(timeout=max(deadline - time.monotonic(), 0.1))
        for child in children:
            if child.process.is_alive():
                child.process.terminate()
        for child in children:
            child.process.join(timeout=5)
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
