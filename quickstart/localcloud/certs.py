"""TLS for the local cloud: a private CA and a server certificate, made once per state directory.

adal only talks to an ``https`` authority and requests-oauthlib refuses to send a bearer token
over plain http, so the local cloud must serve TLS. Clients trust ``tls/ca.pem`` (the
``ca_cert`` in connection.json); the server presents ``tls/server.pem``, signed by that CA, valid
for 127.0.0.1 and localhost (and the address given with ``--host``, where a server binds one on
explicit opt-in; a certificate that does not cover it is made again). Two certificates instead
of one self-signed leaf keep strict X.509 verifiers (OpenSSL's X509_STRICT, newer Pythons)
happy. Elliptic-curve keys make the first start take milliseconds, not the hundreds an RSA key
would.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TLS_DIR = "tls"
CA_CERT_FILE = "ca.pem"
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server-key.pem"
_VALIDITY = datetime.timedelta(days=3650)
_RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def ensure_certificates(state_dir: str | os.PathLike, host: str | None = None) -> TlsFiles:
    """Return the TLS files for ``state_dir``, making them first if missing, near expiry, or
    not valid for ``host`` (an address other than 127.0.0.1 the server binds)."""
    folder = Path(state_dir).resolve() / TLS_DIR
    files = TlsFiles(folder / CA_CERT_FILE, folder / SERVER_CERT_FILE, folder / SERVER_KEY_FILE)
    if (
        all(p.exists() for p in (files.ca_cert, files.server_cert, files.server_key))
        and _still_valid(files.server_cert)
        and _still_valid(files.ca_cert)
        and (host is None or host in covered_hosts(files.server_cert))
    ):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    _make_certificates(files, host)
    return files


def covered_hosts(path: Path) -> set:
    """The addresses and names a server certificate is valid for (its subject alt names)."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return set()
    return {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} | set(
        names.get_values_for_type(x509.DNSName)
    )


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _still_valid(path: Path) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc - _RENEW_BEFORE > datetime.datetime.now(datetime.UTC)


def _make_certificates(files: TlsFiles, host: str | None = None) -> None:
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "Local cloud CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "batchai-cntk-quickstart"),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                + ([_alt_name(host)] if host and host not in ("127.0.0.1", "localhost") else [])
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(files.server_key, key_pem, private=True)
    _write(files.server_cert, server_cert.public_bytes(serialization.Encoding.PEM))
    _write(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """Write via a temp file and rename, so a crash never leaves a truncated PEM."""
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(temp, path)
