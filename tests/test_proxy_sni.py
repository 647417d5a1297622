"""Tests of the pure ClientHello parser (``jupyterhub_dask_gateway.proxy.sni``).

The hellos are real: produced by Python's ``ssl`` module through memory BIOs,
the same library the dask-gateway client's comm uses.
"""

import random
import ssl
import struct

import pytest

from jupyterhub_dask_gateway.proxy.sni import (
    INVALID,
    MAX_HELLO_SIZE,
    NEED_MORE,
    NOT_TLS,
    OK,
    SNIResult,
    parse_sni,
)

SERVER_NAME = "daskgateway-abc"


def client_hello(server_hostname=SERVER_NAME, version=ssl.TLSVersion.TLSv1_3) -> bytes:
    """The bytes a Python TLS client sends first, up to its ClientHello."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = version
    ctx.maximum_version = version
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


@pytest.mark.parametrize("version", VERSIONS, ids=["tls1.2", "tls1.3"])
def test_real_client_hello(version):
    hello = client_hello(version=version)
    assert parse_sni(hello) == (OK, SERVER_NAME)
    status, name = parse_sni(hello)
    assert status is OK and name == SERVER_NAME
    # Whatever follows the hello (early data, a pipelined record) does not matter.
    assert parse_sni(hello + b"\x17\x03\x03\x00\x01x") == (OK, SERVER_NAME)


@pytest.mark.parametrize("version", VERSIONS, ids=["tls1.2", "tls1.3"])
def test_no_sni(version):
    # Python sends no SNI without a server_hostname (or for an IP address).
    assert parse_sni(client_hello(server_hostname=None, version=version)) == (OK, None)
    assert parse_sni(client_hello(server_hostname="127.0.0.1", version=version)) == (OK, None)


def test_bytes_like_inputs():
    hello = client_hello()
    for data in (bytearray(hello), memoryview(hello), memoryview(bytearray(hello))):
        assert parse_sni(data) == (OK, SERVER_NAME)


@pytest.mark.parametrize("version", VERSIONS, ids=["tls1.2", "tls1.3"])
def test_every_truncation_needs_more(version):
    hello = client_hello(version=version)
    for cut in range(len(hello)):
        result = parse_sni(hello[:cut])
        assert result.status is NEED_MORE, cut
        assert result.server_name is None
        # ``needed`` is the whole record once its header is known, the header before.
        assert result.needed == (len(hello) if cut >= 5 else 5), cut


def test_not_tls():
    assert parse_sni(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == (NOT_TLS, None)
    assert parse_sni(b"P") == (NOT_TLS, None)
    # A handshake record whose version major is not 3 is not TLS.
    assert parse_sni(b"\x16\x02") == (NOT_TLS, None)
    # A handshake record that does not start with a ClientHello (here a ServerHello).
    assert parse_sni(b"\x16\x03\x01\x00\x10\x02") == (NOT_TLS, None)
    # SSLv2-compatible hellos are long gone and not TLS to us.
    assert parse_sni(b"\x80\x2e\x01\x03\x01") == (NOT_TLS, None)


def test_oversized_and_empty_records_are_invalid():
    assert parse_sni(b"\x16\x03\x01" + struct.pack("!H", 2**14 + 1)) == (INVALID, None)
    assert parse_sni(b"\x16\x03\x01\xff\xff") == (INVALID, None)
    assert parse_sni(b"\x16\x03\x01\x00\x00") == (INVALID, None)
    # The largest legal record is still waited for, up to the cap.
    result = parse_sni(b"\x16\x03\x01" + struct.pack("!H", 2**14) + b"\x01")
    assert result.status is NEED_MORE and result.needed == MAX_HELLO_SIZE


def _rebuild(hello: bytes, extensions: bytes | None) -> bytes:
    """Replace the extensions block of a real hello (``None``: no block), fixing the lengths."""
    body = hello[9:]
    pos = 2 + 32
    pos += 1 + body[pos]
    pos += 2 + int.from_bytes(body[pos : pos + 2], "big")
    pos += 1 + body[pos]
    new_body = body[:pos]
    if extensions is not None:
        new_body += struct.pack("!H", len(extensions)) + extensions
    handshake = b"\x01" + len(new_body).to_bytes(3, "big") + new_body
    return hello[:3] + struct.pack("!H", len(handshake)) + handshake


def _sni_extension(*names: tuple[int, bytes]) -> bytes:
    entries = b"".join(struct.pack("!BH", t, len(n)) + n for t, n in names)
    data = struct.pack("!H", len(entries)) + entries
    return struct.pack("!HH", 0, len(data)) + data


def test_crafted_extensions():
    hello = client_hello()
    # Sanity check of the rebuild helper itself.
    assert parse_sni(_rebuild(hello, _sni_extension((0, b"daskgateway-x")))) == (
        OK,
        "daskgateway-x",
    )
    # No extensions block at all (legal for very old clients), or an empty one.
    assert parse_sni(_rebuild(hello, None)) == (OK, None)
    assert parse_sni(_rebuild(hello, b"")) == (OK, None)
    # An unknown name type is skipped; a host name after it is used.
    assert parse_sni(_rebuild(hello, _sni_extension((7, b"zz"), (0, b"daskgateway-y")))) == (
        OK,
        "daskgateway-y",
    )
    bad = [
        _sni_extension((0, b"a"), (0, b"b")),  # two host names
        _sni_extension((0, b"a")) + _sni_extension((0, b"b")),  # two SNI extensions
        _sni_extension((0, b"")),  # empty name
        _sni_extension((0, b"bad name")),  # not a DNS name
        _sni_extension((0, b"\xff\xfe")),  # not ASCII
        _sni_extension((0, b"a" * 300)),  # too long
        struct.pack("!HH", 0, 0),  # empty server_name_list
        struct.pack("!HH", 0, 3) + b"\x00\x05\x00",  # list longer than the extension
        struct.pack("!HH", 0x10, 50),  # extension longer than the block
        b"\x00",  # a lone byte
    ]
    for extensions in bad:
        assert parse_sni(_rebuild(hello, extensions)) == (INVALID, None), extensions


def test_inconsistent_lengths_are_invalid():
    hello = bytearray(client_hello())
    # Handshake length disagreeing with the record (fragmented or padded hello).
    for delta in (-1, 1):
        broken = bytearray(hello)
        length = int.from_bytes(hello[6:9], "big") + delta
        broken[6:9] = length.to_bytes(3, "big")
        assert parse_sni(bytes(broken)) == (INVALID, None)
    # A record cut short of its handshake message: a hello spanning two records.
    short = bytearray(hello[:100])
    short[3:5] = struct.pack("!H", 95)
    assert parse_sni(bytes(short)) == (INVALID, None)


def test_random_bytes_never_raise():
    rng = random.Random(1234)
    for _ in range(5000):
        data = rng.randbytes(rng.randrange(0, 300))
        result = parse_sni(data)
        assert isinstance(result, SNIResult)
        assert result.status in (NEED_MORE, NOT_TLS, INVALID, OK)
        # Random data that happens to start like a hello must still be well classified.
        prefixed = b"\x16\x03\x01" + data
        assert parse_sni(prefixed).status in (NEED_MORE, NOT_TLS, INVALID, OK)


def test_fuzz_mutated_hellos_never_raise():
    """Random byte flips, insertions, deletions and splices of real hellos, seeded."""
    rng = random.Random(20260)
    seeds = [client_hello(version=v) for v in VERSIONS]
    seeds.append(client_hello(server_hostname=None))
    counts = {status: 0 for status in (NEED_MORE, NOT_TLS, INVALID, OK)}
    for _ in range(20_000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(5)
            pos = rng.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(pos, len(data) - 1)] = rng.randrange(256)
            elif op == 1:
                data[pos:pos] = rng.randbytes(rng.randint(1, 8))
            elif op == 2:
                del data[pos : pos + rng.randint(1, 8)]
            elif op == 3 and pos + 2 <= len(data):
                # Length fields are where parsers break: write extreme values.
                data[pos : pos + 2] = rng.choice([b"\x00\x00", b"\xff\xff", b"\x40\x00"])
            else:
                data = data[:pos]
        result = parse_sni(bytes(data))
        assert isinstance(result, tuple) and len(result) == 2
        counts[result.status] += 1
        if result.status is OK:
            assert result.server_name is None or isinstance(result.server_name, str)
    # The fuzzer reached every outcome, so it exercised the deep parts of the parser.
    assert all(counts.values()), counts


def test_huge_input_is_capped():
    hello = client_hello()
    assert parse_sni(hello + b"\x00" * (10 * MAX_HELLO_SIZE)) == (OK, SERVER_NAME)


def test_non_bytes_input_is_invalid():
    for value in (None, 42, "text", object()):
        assert parse_sni(value) == (INVALID, None)
