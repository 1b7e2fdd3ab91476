"""Certificates a test makes for itself (``cryptography``): a CA, server certificates for
127.0.0.1, and client certificates for mutual TLS. Nothing is downloaded or kept."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


class TestCA:
    """A certificate authority in ``folder``; it issues server and client certificates."""

    __test__ = False  # not a pytest class

    def __init__(self, folder: Path, name: str = "Verbund test CA") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert = folder / f"{name.replace(' ', '-')}.pem"
        self.cert.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, *, server: bool) -> CertFiles:
        """A certificate for ``name``: a server's (for 127.0.0.1 and localhost) or a
        client's."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self._key, hashes.SHA256())
        files = CertFiles(self.folder / f"{name}.pem", self.folder / f"{name}.key")
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        files.key.chmod(0o600)
        return files


class MutualTLS:
    """A site agent that requires client certificates and an access point that has one:
    one CA, the agent's server certificate, the access point's client certificate."""

    def __init__(self, folder: Path) -> None:
        self.ca = TestCA(folder)
        self.server = self.ca.issue("agent", server=True)
        self.client = self.ca.issue("access-point", server=False)

    def agent_section(self) -> dict[str, str]:
        """site.toml's ``[agent]`` TLS keys."""
        return {
            "tls_cert": str(self.server.cert),
            "tls_key": str(self.server.key),
            "tls_client_ca": str(self.ca.cert),
        }

    def site_section(self) -> dict[str, str]:
        """The access point's ``[[sites]]`` keys for reaching that agent."""
        return {
            "agent_ca_file": str(self.ca.cert),
            "agent_client_cert": str(self.client.cert),
            "agent_client_key": str(self.client.key),
        }

    def context(self) -> ssl.SSLContext:
        """The access point's side, for a test's own clients of the agent."""
        ctx = ssl.create_default_context(cafile=str(self.ca.cert))
        ctx.load_cert_chain(str(self.client.cert), str(self.client.key))
        return ctx
