"""Just enough of the D-Bus wire protocol to read one property from the system bus.

The network policy asks NetworkManager whether a link is metered; the SDK takes no D-Bus
dependency for one integer. Messages go out little-endian; replies are read in either
byte order.
"""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path
from typing import NamedTuple

TIMEOUT = 0.5
_NO_AUTO_START = 0x2
_METHOD_CALL, _METHOD_RETURN, _ERROR = 1, 2, 3
_REPLY_SERIAL, _SIGNATURE = 5, 8
_MAX_MESSAGE = 1 << 20


class Reply(NamedTuple):
    signature: str
    body: bytes
    endian: str


class SystemBus:
    def __init__(self, path: Path) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._buffer = b""
        self._serial = 0
        try:
            self._sock.settimeout(TIMEOUT)
            self._sock.connect(str(path))
            uid = str(os.getuid()).encode().hex().encode()
            self._sock.sendall(b"\0AUTH EXTERNAL " + uid + b"\r\n")
            if not self._read_line().startswith(b"OK "):
                raise ConnectionRefusedError("the system bus refused EXTERNAL authentication")
            self._sock.sendall(b"BEGIN\r\n")
            bus = "org.freedesktop.DBus"
            self.call(bus, "/org/freedesktop/DBus", bus, "Hello")
        except BaseException:
            self._sock.close()
            raise

    def __enter__(self) -> SystemBus:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._sock.close()

    def call(
        self, destination: str, path: str, interface: str, member: str, *args: str
    ) -> Reply | None:
        # Arguments are strings; an error reply is None.
        self._serial += 1
        self._sock.sendall(_method_call(self._serial, destination, path, interface, member, args))
        for _ in range(16):  # skip signals, such as NameAcquired after Hello
            kind, fields, body, endian = self._receive()
            if kind in (_METHOD_RETURN, _ERROR) and fields.get(_REPLY_SERIAL) == self._serial:
                if kind == _ERROR:
                    return None
                return Reply(str(fields.get(_SIGNATURE, "")), body, endian)
        raise ConnectionError("no reply from the system bus")

    def _receive(self) -> tuple[int, dict[int, str | int], bytes, str]:
        fixed = self._read(16)
        if fixed[:1] not in (b"l", b"B"):
            raise ValueError("not a D-Bus message")
        endian = "<" if fixed[:1] == b"l" else ">"
        body_length, _, fields_length = struct.unpack(endian + "3I", fixed[4:16])
        if body_length + fields_length > _MAX_MESSAGE:
            raise ValueError("D-Bus message too large")
        header = fixed + self._read(fields_length + -fields_length % 8)
        body = self._read(body_length)
        fields: dict[int, str | int] = {}
        pos = 16
        while pos < 16 + fields_length:
            pos += -pos % 8  # each (code, variant) struct is 8-aligned
            code = header[pos]
            signature, pos = get_signature(header, pos + 1)
            if signature == "u":
                fields[code], pos = get_uint32(header, pos, endian)
            elif signature in ("s", "o"):
                fields[code], pos = get_string(header, pos, endian)
            elif signature == "g":
                fields[code], pos = get_signature(header, pos)
            else:
                raise ValueError(f"unexpected D-Bus header field type {signature!r}")
        return fixed[1], fields, body, endian

    def _read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _read_line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            self._fill()
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("the system bus closed the connection")
        self._buffer += chunk


def _method_call(
    serial: int, destination: str, path: str, interface: str, member: str, args: tuple[str, ...]
) -> bytes:
    body = bytearray()
    for arg in args:
        _put_string(body, arg)
    message = bytearray(
        struct.pack("<cBBBIII", b"l", _METHOD_CALL, _NO_AUTO_START, 1, len(body), serial, 0)
    )
    fields = [(1, "o", path), (2, "s", interface), (3, "s", member), (6, "s", destination)]
    if args:
        fields.append((_SIGNATURE, "g", "s" * len(args)))
    for code, signature, value in fields:
        message += bytes(-len(message) % 8)
        message.append(code)
        _put_signature(message, signature)
        if signature == "g":
            _put_signature(message, value)
        else:
            _put_string(message, value)
    struct.pack_into("<I", message, 12, len(message) - 16)  # the header fields' byte length
    message += bytes(-len(message) % 8)
    return bytes(message + body)


def _put_signature(buffer: bytearray, value: str) -> None:
    raw = value.encode()
    buffer += bytes([len(raw)]) + raw + b"\0"


def _put_string(buffer: bytearray, value: str) -> None:
    raw = value.encode()
    buffer += bytes(-len(buffer) % 4)
    buffer += struct.pack("<I", len(raw)) + raw + b"\0"


def get_signature(data: bytes, pos: int) -> tuple[str, int]:
    end = pos + 1 + data[pos]
    if end >= len(data):
        raise ValueError("truncated D-Bus signature")
    return data[pos + 1 : end].decode(), end + 1


def get_uint32(data: bytes, pos: int, endian: str) -> tuple[int, int]:
    pos += -pos % 4
    return int(struct.unpack_from(endian + "I", data, pos)[0]), pos + 4


def get_string(data: bytes, pos: int, endian: str) -> tuple[str, int]:
    size, pos = get_uint32(data, pos, endian)
    end = pos + size
    if end >= len(data):
        raise ValueError("truncated D-Bus string")
    return data[pos:end].decode(), end + 1
