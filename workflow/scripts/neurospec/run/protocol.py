"""The wire protocol between a job and its worker: each message is an 8-byte length, then JSON."""

from __future__ import annotations

import json
import socket
import struct
from typing import Any, Mapping


def encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message).encode()


def send(s: socket.socket, payload: bytes) -> None:
    s.sendall(struct.pack("!Q", len(payload)) + payload)


def _receive_exact(s: socket.socket, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = s.recv(min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def receive(s: socket.socket) -> dict[str, Any] | None:
    head = _receive_exact(s, 8)
    if head is None:
        return None
    body = _receive_exact(s, struct.unpack("!Q", head)[0])
    return None if body is None else json.loads(body)
