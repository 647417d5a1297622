"""Per-cluster TLS material.

Each cluster gets a fresh key and a self-signed certificate that acts as its own
CA, the scheduler's server certificate, the workers' certificate and the owning
user's client certificate (the dask-gateway client requires exactly this;
docs/protocol.md, "The cluster certificate"). The gateway never decrypts scheduler
traffic.

The key is ECDSA P-256 by default; the reference server uses RSA-2048, which
``DaskGateway.tls_key_type = "rsa-2048"`` restores. The client does not care (it
loads whatever PKCS8 PEM it is given into an ``ssl`` context), and P-256 is the
stronger of the two (~128-bit against ~112-bit security) while costing ~0.1 ms
to generate instead of ~50 ms (up to ~100 ms) and ~800 bytes of PEM per cluster
instead of ~2.8 KB in every list answer.
"""

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

KEY_TYPES = ("ecdsa-p256", "rsa-2048")


def _private_key(key_type: str):
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"Unknown TLS key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}")


def new_keypair(
    cluster_name: str, key_type: str = "ecdsa-p256", days: int = 365
) -> tuple[str, str]:
    """Return ``(cert_pem, key_pem)`` as text for a new cluster."""
    key = _private_key(key_type)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dask-internal")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(cluster_name), x509.DNSName("dask-internal")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return cert_pem, key_pem
