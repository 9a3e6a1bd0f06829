"""The emulator's own CA and server certificate.

Clients trust the emulator through an explicit CA file (`ca.pem`) or a bundle of the system CAs plus the
emulator CA (`ca-bundle.pem`), which suits `REQUESTS_CA_BUNDLE` (msal ignores `verify=` when that variable
is set; see the wire notes §7). Files are reused across starts so clients keep trusting a restarted emulator.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SYSTEM_CA_CANDIDATES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    ca_bundle: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.server_cert, self.server_key)
        return ctx


def _key() -> ec.EllipticCurvePrivateKey:
    # EC keys: generated in milliseconds, which keeps a cold start well under the 2 s goal.
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(path, 0o600)


def ensure(data_dir: Path, hostnames: tuple[str, ...] = ("localhost",)) -> TlsFiles:
    """Create (or reuse) the CA and a server certificate for localhost/127.0.0.1/::1 and `hostnames`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(
        ca_cert=data_dir / "ca.pem",
        server_cert=data_dir / "server.pem",
        server_key=data_dir / "server-key.pem",
        ca_bundle=data_dir / "ca-bundle.pem",
    )
    now = dt.datetime.now(dt.UTC)
    ca_key_path = data_dir / "ca-key.pem"
    if files.ca_cert.exists() and ca_key_path.exists():
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    else:
        ca_key = _key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Workload Identity Portal emulator CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
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
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(ca_key_path, ca_key)
        files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        files.server_cert.unlink(missing_ok=True)

    wanted = sorted({"localhost", *hostnames})
    if not files.server_cert.exists() or _sans(files.server_cert) != set(wanted):
        key = _key()
        sans: list[x509.GeneralName] = [x509.DNSName(h) for h in wanted]
        sans += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(files.server_key, key)
        files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    system = next((Path(p) for p in SYSTEM_CA_CANDIDATES if Path(p).exists()), None)
    bundle = (system.read_bytes() if system else b"") + b"\n" + files.ca_cert.read_bytes()
    if not files.ca_bundle.exists() or files.ca_bundle.read_bytes() != bundle:
        files.ca_bundle.write_bytes(bundle)
    return files


def _sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return set(ext.value.get_values_for_type(x509.DNSName))
