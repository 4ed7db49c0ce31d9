"""The private line between a run and its bridge process: framed messages over a socketpair.

The run creates a ``socketpair`` and hands one end to the bridge process it starts
(``pass_fds``): the socket has no name in the file system, so no other process — a
worker least of all — can connect to it or read what crosses it (the tokens do).
Both ends are our own code, so the frames are pickles: protocol Structs, the
replies and the exceptions of the actors cross as they are.  An API key
(:class:`session.secret.Secret`, which refuses to show itself) crosses as a key:
it is registered for redaction again where it lands.

A frame is a 4-byte big-endian length and the pickle.  ``receive`` returns None at
the end of the stream: the other process is gone (or closed its end).
"""

from __future__ import annotations

import contextlib
import copyreg
import io
import pickle
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any

from session.secret import Secret

__all__ = ["MAX_FRAME", "ActorHandle", "Channel", "ChannelClosed", "RecallWrite", "RecalledWrite"]

#: The largest frame accepted (a task description is at most 100 kB; a reply a few MB at worst).
MAX_FRAME = 64 * 2**20
_HEADER = struct.Struct(">I")


@dataclass(frozen=True)
class ActorHandle:
    """An actor of the run, named for the bridge process (an ActorRef cannot cross)."""

    name: str


@dataclass(frozen=True)
class RecallWrite:
    """Asked of the run itself (target ``run``): what it knows of queued write ``request_id``."""

    request_id: str


@dataclass(frozen=True)
class RecalledWrite:
    """The run's record of a queued write: the outcome once the Executor has answered."""

    tool: str
    message: Any
    queued_at: float
    settled: bool
    reply: Any = None
    error: BaseException | None = None


class ChannelClosed(Exception):
    """The other end is gone: nothing more can be sent."""


def _secret(secret: Secret) -> tuple[type[Secret], tuple[str, str]]:
    return Secret, (secret.provider, secret.reveal())  # Secret() registers the key for redaction


class _Pickler(pickle.Pickler):
    dispatch_table = copyreg.dispatch_table.copy()
    dispatch_table[Secret] = _secret


class Channel:
    """One end of the line; ``send`` may be called from any thread, ``receive`` from one."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()

    @classmethod
    def from_fd(cls, fd: int) -> Channel:
        return cls(socket.socket(fileno=fd))

    def send(self, item: tuple[Any, ...]) -> None:
        buffer = io.BytesIO()
        _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(item)
        payload = buffer.getvalue()
        if len(payload) > MAX_FRAME:
            raise ValueError(f"a message of {len(payload)} bytes is over the bridge channel's {MAX_FRAME} limit")
        try:
            with self._send_lock:
                self.sock.sendall(_HEADER.pack(len(payload)) + payload)
        except OSError as error:
            raise ChannelClosed(str(error)) from None

    def receive(self) -> tuple[Any, ...] | None:
        header = self._read(_HEADER.size)
        if header is None:
            return None
        (size,) = _HEADER.unpack(header)
        if size > MAX_FRAME:
            raise ChannelClosed(f"a frame of {size} bytes is over the limit: the other end is not a bridge")
        payload = self._read(size)
        if payload is None:
            return None
        item = pickle.loads(payload)  # noqa: S301 - our own process at the other end of a private socketpair
        if not isinstance(item, tuple):
            raise ChannelClosed(f"a frame that is not a message: {type(item).__name__}")
        return item

    def _read(self, size: int) -> bytes | None:
        chunks: list[bytes] = []
        left = size
        while left:
            try:
                chunk = self.sock.recv(min(left, 1 << 20))
            except OSError:
                return None
            if not chunk:
                return None
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
