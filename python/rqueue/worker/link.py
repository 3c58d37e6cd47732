"""A request/reply channel between the prefork supervisor and one child (a socket pair).

The supervisor asks; a thread in the child answers, beside the task it may be running, so a
busy child still reports. Frames are a 4-byte length and a JSON object carrying a sequence
number: a reply that arrives after its request timed out is recognised and dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("rqueue.worker")

_LENGTH = struct.Struct(">I")


class ChildLink:
    """Both ends of one supervisor-child channel; after the fork each side closes the other's end."""

    def __init__(self) -> None:
        self.parent_end, self.child_end = socket.socketpair()
        self._seq = 0

    def in_parent(self) -> None:
        self.child_end.close()

    def in_child(self) -> None:
        self.parent_end.close()

    def close(self) -> None:
        for end in (self.parent_end, self.child_end):
            with contextlib.suppress(OSError):
                end.close()

    # -- supervisor side --------------------------------------------------------------------------

    def send(self, request: dict[str, Any]) -> int:
        """Send a request; returns its sequence number (for ``receive``)."""
        self._seq += 1
        _write(self.parent_end, {**request, "seq": self._seq})
        return self._seq

    def receive(self, seq: int, deadline: float) -> Any:
        """The reply to request ``seq``, or None if it does not come by ``deadline`` (monotonic)."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                frame = _read(self.parent_end, left)
            except _PartialFrame:
                # The rest of a frame did not come in time: the stream is out of step for good.
                # Close it; this child goes unasked until it is replaced.
                logger.warning("Lost step with a child's control channel; closing it")
                self.close()
                return None
            if frame is None:
                return None
            if frame.get("seq") == seq:
                return frame.get("reply")

    # -- child side -------------------------------------------------------------------------------

    def serve(self, handle: Callable[[dict[str, Any]], Any]) -> None:
        """Answer the supervisor's requests in a daemon thread until the supervisor goes away."""

        def loop() -> None:
            while True:
                try:
                    request = _read(self.child_end, None)
                except _PartialFrame:  # the supervisor went away mid-request
                    return
                if request is None:
                    return
                try:
                    reply = handle(request)
                except Exception:  # a failed report must not end the channel
                    logger.exception("Could not answer the supervisor's %s request", request.get("op"))
                    reply = None
                try:
                    _write(self.child_end, {"seq": request.get("seq"), "reply": reply})
                except OSError:
                    return

        threading.Thread(target=loop, name="rqueue-link", daemon=True).start()


def _write(sock: socket.socket, obj: dict[str, Any]) -> None:
    data = json.dumps(obj, default=repr).encode()
    sock.sendall(_LENGTH.pack(len(data)) + data)


class _PartialFrame(Exception):
    """A frame began but did not end in time."""


def _read(sock: socket.socket, timeout_s: float | None) -> dict[str, Any] | None:
    """One frame, or None on timeout (before a frame began), EOF or a broken channel;
    _PartialFrame when a frame began and its rest did not come."""
    try:
        sock.settimeout(timeout_s)
        head = _read_exactly(sock, _LENGTH.size)
    except OSError:
        return None
    if head is None:
        return None
    try:
        sock.settimeout(None if timeout_s is None else max(timeout_s, 1.0))
        body = _read_exactly(sock, _LENGTH.unpack(head)[0])
    except OSError:
        raise _PartialFrame from None
    if body is None:
        return None
    try:
        frame = json.loads(body)
    except ValueError:
        return None
    return frame if isinstance(frame, dict) else None


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = sock.recv(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
