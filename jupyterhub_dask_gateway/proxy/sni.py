"""Read the server name (SNI) from the first bytes of a TLS connection.

This module owns one pure function, :func:`parse_sni`, which the TCP proxy
(:mod:`.tcp`) calls on the bytes it has peeked so far to decide where a
connection goes. It does no I/O and never raises: the input comes from anyone
on the network. It leaves everything else (reading, timeouts, routing) to
:mod:`.tcp`.

Only a ClientHello that fits in the first TLS record is understood. That is
every hello Python, Go and OpenSSL clients send (they are a few hundred bytes
to a few KiB, far below the 16 KiB record limit); a hello fragmented across
records is reported as ``INVALID``.
"""

from __future__ import annotations

import enum

__all__ = [
    "INVALID",
    "MAX_HELLO_SIZE",
    "NEED_MORE",
    "NOT_TLS",
    "OK",
    "SNIResult",
    "SNIStatus",
    "parse_sni",
]

# TLS record and handshake constants (RFC 8446 §5.1, §4; RFC 6066 §3).
_CONTENT_HANDSHAKE = 0x16
_HANDSHAKE_CLIENT_HELLO = 0x01
_EXT_SERVER_NAME = 0x0000
_NAME_TYPE_HOST_NAME = 0x00
_RECORD_HEADER_SIZE = 5
# A TLSPlaintext fragment is at most 2**14 bytes; a hello claiming more is hostile.
_MAX_RECORD_PAYLOAD = 2**14
# The most the proxy ever needs to peek before it can decide.
MAX_HELLO_SIZE = _RECORD_HEADER_SIZE + _MAX_RECORD_PAYLOAD
# DNS names are at most 253 characters; allow a little slack but refuse junk.
_MAX_NAME_LENGTH = 255


class SNIStatus(enum.Enum):
    """What :func:`parse_sni` could tell from the bytes seen so far."""

    NEED_MORE = "need-more"
    """The ClientHello record is incomplete; peek more bytes (see ``needed``)."""
    NOT_TLS = "not-tls"
    """Not a TLS handshake starting with a ClientHello (e.g. plain HTTP)."""
    INVALID = "invalid"
    """Looks like TLS but is malformed, oversized or fragmented: drop it."""
    OK = "ok"
    """A complete ClientHello; ``server_name`` is the SNI or ``None``."""


NEED_MORE = SNIStatus.NEED_MORE
NOT_TLS = SNIStatus.NOT_TLS
INVALID = SNIStatus.INVALID
OK = SNIStatus.OK


class SNIResult(tuple):
    """The pair ``(status, server_name)`` returned by :func:`parse_sni`.

    It unpacks like a plain 2-tuple. ``needed`` is the total number of bytes
    (counted from the first byte of the connection) required before the answer
    can change; it is only meaningful with ``NEED_MORE`` and is 0 otherwise.
    """

    def __new__(cls, status: SNIStatus, server_name: str | None = None, needed: int = 0):
        self = super().__new__(cls, (status, server_name))
        self.needed = needed
        return self

    @property
    def status(self) -> SNIStatus:
        return self[0]

    @property
    def server_name(self) -> str | None:
        return self[1]

    def __repr__(self) -> str:
        extra = f", needed={self.needed}" if self.status is NEED_MORE else ""
        return f"SNIResult({self.status.name}, {self.server_name!r}{extra})"


class _Malformed(Exception):
    """A length field points outside the bytes it must fit in."""


class _Reader:
    """Bounds-checked big-endian reads over a bytes slice."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int, end: int):
        self.data = data
        self.pos = pos
        self.end = end

    def uint(self, size: int) -> int:
        if self.pos + size > self.end:
            raise _Malformed
        value = int.from_bytes(self.data[self.pos : self.pos + size], "big")
        self.pos += size
        return value

    def vector(self, length_size: int, minimum: int = 0) -> _Reader:
        """A sub-reader over a length-prefixed vector, skipped in this reader."""
        length = self.uint(length_size)
        if length < minimum or self.pos + length > self.end:
            raise _Malformed
        sub = _Reader(self.data, self.pos, self.pos + length)
        self.pos += length
        return sub

    def remaining(self) -> int:
        return self.end - self.pos


def parse_sni(data: bytes | bytearray | memoryview) -> SNIResult:
    """Classify the first bytes of a connection and extract the TLS server name.

    Parameters
    ----------
    data : bytes-like
        Everything read from the connection so far (it may be more than the
        ClientHello; extra bytes are ignored).

    Returns
    -------
    SNIResult
        ``(status, server_name)``: ``(NEED_MORE, None)`` with ``.needed`` set,
        ``(NOT_TLS, None)``, ``(INVALID, None)``, or ``(OK, name_or_None)``.
        Never raises.
    """
    try:
        # Copy at most what can matter, so a huge or mutable input costs nothing more.
        head = bytes(memoryview(data)[:MAX_HELLO_SIZE])
    except (TypeError, ValueError):
        return SNIResult(INVALID)
    return _parse(head)


def _parse(data: bytes) -> SNIResult:
    if not data:
        return SNIResult(NEED_MORE, needed=_RECORD_HEADER_SIZE)
    if data[0] != _CONTENT_HANDSHAKE:
        return SNIResult(NOT_TLS)
    # Record version: every TLS version (and SSL 3) uses major version 3 here.
    if len(data) >= 2 and data[1] != 0x03:
        return SNIResult(NOT_TLS)
    if len(data) < _RECORD_HEADER_SIZE:
        return SNIResult(NEED_MORE, needed=_RECORD_HEADER_SIZE)
    record_length = int.from_bytes(data[3:5], "big")
    if record_length == 0 or record_length > _MAX_RECORD_PAYLOAD:
        return SNIResult(INVALID)
    # The handshake type is known as soon as one payload byte arrives.
    if len(data) > _RECORD_HEADER_SIZE and data[5] != _HANDSHAKE_CLIENT_HELLO:
        return SNIResult(NOT_TLS)
    record_end = _RECORD_HEADER_SIZE + record_length
    if len(data) < record_end:
        return SNIResult(NEED_MORE, needed=record_end)
    try:
        return SNIResult(
            OK, _client_hello_server_name(_Reader(data, _RECORD_HEADER_SIZE, record_end))
        )
    except _Malformed:
        return SNIResult(INVALID)


def _client_hello_server_name(record: _Reader) -> str | None:
    record.uint(1)  # handshake type, checked by the caller
    hello_length = record.uint(3)
    if hello_length != record.remaining():
        # Either fragmented over several records (unsupported) or trailing junk.
        raise _Malformed
    hello = record
    hello.uint(2)  # legacy_version
    hello.pos += 32  # random
    if hello.pos > hello.end:
        raise _Malformed
    session_id = hello.vector(1)
    if session_id.remaining() > 32:
        raise _Malformed
    cipher_suites = hello.vector(2, minimum=2)
    if cipher_suites.remaining() % 2:
        raise _Malformed
    hello.vector(1, minimum=1)  # compression methods
    if hello.remaining() == 0:
        # No extensions at all (SSL 3 style hello): valid, no SNI.
        return None
    extensions = hello.vector(2)
    if hello.remaining():
        raise _Malformed

    server_name = None
    seen_server_name = False
    while extensions.remaining():
        ext_type = extensions.uint(2)
        body = extensions.vector(2)
        if ext_type != _EXT_SERVER_NAME:
            continue
        if seen_server_name:
            # Two SNI extensions could route by one and serve by the other.
            raise _Malformed
        seen_server_name = True
        server_name = _server_name_extension(body)
    return server_name


def _server_name_extension(body: _Reader) -> str | None:
    names = body.vector(2, minimum=1)
    if body.remaining():
        raise _Malformed
    host_name = None
    while names.remaining():
        name_type = names.uint(1)
        name = names.vector(2, minimum=1)
        if name_type != _NAME_TYPE_HOST_NAME:
            continue
        if host_name is not None:
            # RFC 6066 allows at most one name of each type.
            raise _Malformed
        raw = name.data[name.pos : name.end]
        if len(raw) > _MAX_NAME_LENGTH or not all(0x21 <= b < 0x7F for b in raw):
            raise _Malformed
        host_name = raw.decode("ascii")
    return host_name
