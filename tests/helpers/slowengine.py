"""The real engine behind a pipe that can hold one request: a Unix socket
that forwards every connection to the engine's socket, and, for the first
request a test picks, calls the test back at a chosen moment of that
request (before the engine has it, or after the engine answered but before
slim has the answer). A slow or distant engine does the same to slim; the
engine itself is the real one.

    with HeldRequest(tmp, creating_container, Moment.BEFORE_ENGINE, hook) as held:
        run slim with DOCKER_HOST=held.url
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from types import TracebackType

ENGINE_SOCKET = "/var/run/docker.sock"
CHUNK = 65536
REQUEST_LINE = re.compile(rb"^(GET|HEAD|POST|PUT|DELETE) (\S+) HTTP/1\.[01]\r\n")


class Moment(Enum):
    BEFORE_ENGINE = "before the engine has the request"
    BEFORE_ANSWER = "after the engine answered, before slim has the answer"


def creating_container(method: bytes, target: bytes, _number: int) -> bool:
    return method == b"POST" and b"/containers/create" in target


def nth_request(wanted: int) -> Callable[[bytes, bytes, int], bool]:
    """Picks the request slim makes `wanted`-th (1 is its first)."""

    def pick(_method: bytes, _target: bytes, number: int) -> bool:
        return number == wanted

    return pick


class HeldRequest:
    """A proxy to the engine's socket that runs `hook` once, at `moment` of
    the first request `pick` takes: pick(method, target, number), `number`
    counting slim's requests from 1."""

    def __init__(
        self,
        directory: Path,
        pick: Callable[[bytes, bytes, int], bool],
        moment: Moment,
        hook: Callable[[], None],
    ) -> None:
        self.path = directory / "engine.sock"
        self.pick = pick
        self.moment = moment
        self.requests = 0
        self.hook = hook
        self.hooked = threading.Event()  # the hook ran
        self.answered = threading.Event()  # the held request's answer went on (or was dropped)
        self._claimed = threading.Lock()
        self._taken = False
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def __enter__(self) -> HeldRequest:
        self._listener.bind(str(self.path))
        os.chmod(self.path, 0o600)
        self._listener.listen(64)
        self._spawn(self._accept)
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _value: object, _tb: TracebackType | None
    ) -> None:
        self._closing.set()
        self._listener.close()

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            engine.connect(ENGINE_SOCKET)
            holding = threading.Event()  # this connection carries the held request
            self._spawn(self._to_engine, client, engine, holding)
            self._spawn(self._to_client, engine, client, holding)

    def _claim(self, chunk: bytes) -> bool:
        """Whether this chunk starts the request to hold (a chunk that starts
        with a request line starts a request: slim's bodies are JSON and tars)."""
        found = REQUEST_LINE.match(chunk)
        if found is None:
            return False
        with self._claimed:
            self.requests += 1
            if self._taken or not self.pick(found.group(1), found.group(2), self.requests):
                return False
            self._taken = True
            return True

    def _to_engine(
        self, client: socket.socket, engine: socket.socket, holding: threading.Event
    ) -> None:
        try:
            while chunk := client.recv(CHUNK):
                if self._claim(chunk):
                    holding.set()
                    if self.moment is Moment.BEFORE_ENGINE:
                        self.hook()
                        self.hooked.set()
                engine.sendall(chunk)
        except OSError:
            pass
        finally:
            if holding.is_set():
                # slim may be gone; the engine has the request and finishes
                # it, as it does when a client dies in the middle of one
                self.answered.wait(60)
            _shut(engine)

    def _to_client(
        self, engine: socket.socket, client: socket.socket, holding: threading.Event
    ) -> None:
        try:
            while chunk := engine.recv(CHUNK):
                if holding.is_set() and not self.answered.is_set():
                    if self.moment is Moment.BEFORE_ANSWER:
                        self.hook()
                        self.hooked.set()
                    self.answered.set()
                try:
                    client.sendall(chunk)
                except OSError:
                    continue  # slim went away: the engine's side is read to its end
        except OSError:
            pass
        finally:
            if holding.is_set():
                self.answered.set()
            _shut(client)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
