"""Mutual-TLS material for a standalone buildkitd: a CA, a server certificate for its names, a client certificate."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from release.errors import ConfigError
from release.fsutil import write_atomic

DAYS = 365
# A certificate closer than this to its end is renewed when the files are rendered again.
RENEW_BEFORE = datetime.timedelta(days=30)
CA_NAME = "fractalops devstack buildkit CA"
CLIENT_NAME = "fractalops-release"
KEY_MODE = 0o600
CERT_MODE = 0o644

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class TlsFiles:
    """One side's files: the CA that verifies the peer, its own certificate and its private key."""

    ca_cert: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class BuildkitCerts:
    """The rendered folder: CA (and its key), the server side for buildkitd, the client side for buildx."""

    folder: Path
    ca_key: Path
    server: TlsFiles
    client: TlsFiles
    server_names: tuple[str, ...]

    @property
    def ca_cert(self) -> Path:
        """Return the CA certificate (both sides verify their peer with it)."""
        return self.server.ca_cert


def cert_paths(folder: Path) -> BuildkitCerts:
    """Return where the files of a folder live (whether or not they exist yet)."""
    ca = folder / "ca.pem"
    return BuildkitCerts(
        folder=folder,
        ca_key=folder / "ca-key.pem",
        server=TlsFiles(ca, folder / "server.pem", folder / "server-key.pem"),
        client=TlsFiles(ca, folder / "client.pem", folder / "client-key.pem"),
        server_names=(),
    )


def split_names(names: Sequence[str]) -> tuple[list[str], list[Address]]:
    """Split server names into DNS names and IP addresses; refuse an empty list or a malformed name."""
    if not names:
        raise ConfigError("buildkit server names: at least one DNS name or address is needed")
    dns: list[str] = []
    ips: list[Address] = []
    for name in names:
        try:
            ips.append(ipaddress.ip_address(name))
            continue
        except ValueError:
            pass
        labels = name.rstrip(".").split(".")
        if not all(label and len(label) <= 63 and label.replace("-", "").isalnum() for label in labels):
            raise ConfigError(f"buildkit server names: {name!r} is neither a DNS name nor an IP address")
        dns.append(name.rstrip(".").lower())
    return dns, ips


def _new_key() -> ec.EllipticCurvePrivateKey:
    """Return a new P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Return a private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _builder(
    subject: str, issuer: x509.Name, public: ec.EllipticCurvePublicKey, now: datetime.datetime, days: int
) -> x509.CertificateBuilder:
    """Return a certificate builder with subject, issuer, key, serial and validity set."""
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def _usage(*, sign_certs: bool) -> x509.KeyUsage:
    """Return the key usage of a CA (certificate signing) or a leaf (digital signature)."""
    return x509.KeyUsage(
        digital_signature=not sign_certs,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=sign_certs,
        crl_sign=sign_certs,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    subject: str,
    purpose: x509.ObjectIdentifier,
    now: datetime.datetime,
    days: int,
    names: Sequence[str] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Return a certificate signed by the CA for one purpose (server or client auth) and its key."""
    key = _new_key()
    builder = (
        _builder(subject, ca.subject, key.public_key(), now, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(sign_certs=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if names:
        dns, ips = split_names(names)
        general: list[x509.GeneralName] = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ip) for ip in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _load(path: Path) -> x509.Certificate | None:
    """Return the certificate in a PEM file, or None if it is missing or unreadable."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _fresh(cert: x509.Certificate | None, now: datetime.datetime) -> bool:
    """Return whether a certificate is valid now and for a while yet."""
    return cert is not None and cert.not_valid_before_utc <= now and cert.not_valid_after_utc - RENEW_BEFORE > now


def san_names(cert: x509.Certificate) -> set[str]:
    """Return the DNS names and IP addresses of a certificate's subjectAltName, as text."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(name) for name in san.get_values_for_type(x509.DNSName)} | {
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    }


def _signed_by(cert: x509.Certificate | None, ca: x509.Certificate) -> bool:
    """Return whether a certificate was issued by the CA (its signature checks out)."""
    if cert is None:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write a file atomically with its mode (keys 0600)."""
    write_atomic(path, data, mode=mode)


def render_certs(
    folder: Path, server_names: Sequence[str], *, days: int = DAYS, now: datetime.datetime | None = None
) -> BuildkitCerts:
    """Write (or keep, when still valid for the same names) the CA, server and client files; keys are 0600."""
    split_names(server_names)  # refuse bad names before touching anything
    now = now or datetime.datetime.now(datetime.UTC)
    paths = cert_paths(folder)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    ca = _load(paths.ca_cert)
    ca_key: ec.EllipticCurvePrivateKey | None = None
    if _fresh(ca, now):
        try:
            loaded = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
            ca_key = loaded if isinstance(loaded, ec.EllipticCurvePrivateKey) else None
        except (OSError, ValueError, TypeError):
            ca_key = None
    if ca is None or ca_key is None or not _fresh(ca, now):
        ca_key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
        ca = (
            _builder(CA_NAME, name, ca_key.public_key(), now, days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(sign_certs=True), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        _write(paths.ca_key, _key_pem(ca_key), KEY_MODE)
        _write(paths.ca_cert, ca.public_bytes(serialization.Encoding.PEM), CERT_MODE)
    wanted = {str(ipaddress.ip_address(n)) if _is_ip(n) else n.rstrip(".").lower() for n in server_names}
    server = _load(paths.server.cert)
    if not (_fresh(server, now) and _signed_by(server, ca) and server and san_names(server) == wanted):
        cert, key = _leaf(ca, ca_key, server_names[0], ExtendedKeyUsageOID.SERVER_AUTH, now, days, server_names)
        _write(paths.server.key, _key_pem(key), KEY_MODE)
        _write(paths.server.cert, cert.public_bytes(serialization.Encoding.PEM), CERT_MODE)
    client = _load(paths.client.cert)
    if not (_fresh(client, now) and _signed_by(client, ca)):
        cert, key = _leaf(ca, ca_key, CLIENT_NAME, ExtendedKeyUsageOID.CLIENT_AUTH, now, days)
        _write(paths.client.key, _key_pem(key), KEY_MODE)
        _write(paths.client.cert, cert.public_bytes(serialization.Encoding.PEM), CERT_MODE)
    return BuildkitCerts(folder, paths.ca_key, paths.server, paths.client, tuple(server_names))


def _is_ip(name: str) -> bool:
    """Return whether a name is an IP address."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
