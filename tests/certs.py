"""Throwaway PKI for TLS tests, generated at test time with `cryptography`.

`make_pki(directory)` writes PEM files and returns their paths:

- ``ca_cert``: a CA that signs the server and client certificates;
- ``server_cert`` / ``server_key``: valid for ``localhost`` and ``127.0.0.1``;
- ``client_cert`` / ``client_key``: a client certificate (CN ``grpyc test client``);
- ``other_ca_cert``: an unrelated CA, for "wrong CA" tests;
- ``other_client_cert`` / ``other_client_key``: a client certificate signed by the
  unrelated CA.

Keys are ECDSA P-256: generating them takes about a millisecond, so each test
may make its own PKI.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CLIENT_COMMON_NAME", "SERVER_COMMON_NAME", "Pki", "make_pki"]

SERVER_COMMON_NAME = "grpyc test server"
CLIENT_COMMON_NAME = "grpyc test client"


@dataclass(frozen=True, slots=True)
class Pki:
    """Paths of the PEM files written by `make_pki`."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path
    other_client_cert: Path
    other_client_key: Path


@dataclass(frozen=True, slots=True)
class _Issuer:
    name: x509.Name
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject, issuer_name, public_key):
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _make_ca(common_name):
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )
    return _Issuer(name, key, cert)


def _make_leaf(issuer, common_name, usage_oid):
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())
    cert = (
        _builder(_name(common_name), issuer.name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage_oid]), critical=False)
        .add_extension(alt_names, critical=False)
        .add_extension(authority, critical=False)
        .sign(issuer.key, hashes.SHA256())
    )
    return key, cert


def _write_cert(path, cert):
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(path, key):
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    return path


def make_pki(directory: Path) -> Pki:
    """Generate the CAs, keys and certificates into ``directory``; return their paths."""
    directory = Path(directory)
    ca = _make_ca("grpyc test CA")
    other_ca = _make_ca("grpyc unrelated CA")
    server_key, server_cert = _make_leaf(ca, SERVER_COMMON_NAME, ExtendedKeyUsageOID.SERVER_AUTH)
    client_key, client_cert = _make_leaf(ca, CLIENT_COMMON_NAME, ExtendedKeyUsageOID.CLIENT_AUTH)
    other_key, other_cert = _make_leaf(
        other_ca, CLIENT_COMMON_NAME, ExtendedKeyUsageOID.CLIENT_AUTH
    )
    return Pki(
        ca_cert=_write_cert(directory / "ca.pem", ca.cert),
        server_cert=_write_cert(directory / "server.pem", server_cert),
        server_key=_write_key(directory / "server.key", server_key),
        client_cert=_write_cert(directory / "client.pem", client_cert),
        client_key=_write_key(directory / "client.key", client_key),
        other_ca_cert=_write_cert(directory / "other-ca.pem", other_ca.cert),
        other_client_cert=_write_cert(directory / "other-client.pem", other_cert),
        other_client_key=_write_key(directory / "other-client.key", other_key),
    )
