"""Per-cluster key pairs: both key types make a certificate the real client can use.

The handshake below is the one a ``gateway://`` connection makes: the client side is the
dask-gateway client's own ``GatewaySecurity`` context, the server side is what a
scheduler loads (the cluster certificate as server certificate and as the only CA,
client certificates required).
"""

import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from dask_gateway.client import GatewaySecurity
from traitlets import TraitError

from jupyterhub_dask_gateway.app import DaskGateway
from jupyterhub_dask_gateway.tls import new_keypair


def _client_context(cert_pem: str, key_pem: str) -> ssl.SSLContext:
    security = GatewaySecurity(tls_key=key_pem, tls_cert=cert_pem)
    return security.get_connection_args("client")["ssl_context"]


def _scheduler_context(cert_pem: str, key_pem: str, tmp_path) -> ssl.SSLContext:
    cert_file, key_file = tmp_path / "dask.crt", tmp_path / "dask.pem"
    cert_file.write_text(cert_pem)
    key_file.write_text(key_pem)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(cert_file))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


@pytest.mark.parametrize(
    "key_type, key_class",
    [("ecdsa-p256", ec.EllipticCurvePrivateKey), ("rsa-2048", rsa.RSAPrivateKey)],
)
def test_keypair_is_self_signed_and_works_with_the_client(key_type, key_class, tmp_path):
    cert_pem, key_pem = new_keypair("c0ffee", key_type)
    assert key_pem.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS8, unencrypted
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    assert isinstance(key, key_class)
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    assert cert.issuer == cert.subject
    assert cert.subject.rfc4514_string() == "CN=dask-internal"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["c0ffee", "dask-internal"]
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()

    client_ctx = _client_context(cert_pem, key_pem)
    server_ctx = _scheduler_context(cert_pem, key_pem, tmp_path)
    a, b = socket.socketpair()
    peer = {}

    def serve():
        with server_ctx.wrap_socket(a, server_side=True) as s:
            peer["cert"] = s.getpeercert(binary_form=True)
            s.sendall(s.recv(5))

    t = threading.Thread(target=serve)
    t.start()
    with client_ctx.wrap_socket(b, server_hostname="daskgateway-c0ffee") as c:
        c.sendall(b"hello")
        assert c.recv(5) == b"hello"
    t.join(10)
    # The client presented the cluster certificate as its own.
    assert peer["cert"] == cert.public_bytes(serialization.Encoding.DER)


def test_another_clusters_certificate_is_refused(tmp_path):
    cert_pem, key_pem = new_keypair("one")
    other_cert, other_key = new_keypair("two")
    client_ctx = _client_context(other_cert, other_key)
    server_ctx = _scheduler_context(cert_pem, key_pem, tmp_path)
    a, b = socket.socketpair()
    errors = []

    def serve():
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                s.recv(1)
        except (ssl.SSLError, OSError) as e:
            errors.append(e)

    t = threading.Thread(target=serve)
    t.start()
    with pytest.raises((ssl.SSLError, OSError)):
        with client_ctx.wrap_socket(b, server_hostname="daskgateway-one") as c:
            c.sendall(b"x")
            c.recv(1)
    t.join(10)
    assert errors


def test_unknown_key_type_is_refused():
    with pytest.raises(ValueError, match="ecdsa-p256"):
        new_keypair("x", "dsa-1024")
    with pytest.raises(TraitError):
        DaskGateway(tls_key_type="rsa-1024")
    assert DaskGateway().tls_key_type == "ecdsa-p256"
