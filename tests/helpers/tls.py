"""Test certificates and a TLS-terminating proxy on loopback (the dev server speaks plaintext gRPC).

The proxy accepts TLS (HTTP/2 by ALPN) with a server certificate signed by a throwaway CA,
optionally requires a client certificate of another CA (mTLS), and forwards the bytes to the dev
server. It records each completed handshake, so a test can show that its connection really went
through TLS (and with which client certificate).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertPair:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> CertPair:
    cert_path = directory / f"{stem}.pem"
    key_path = directory / f"{stem}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return CertPair(cert_path, key_path)


def make_ca(
    directory: Path, common_name: str
) -> tuple[CertPair, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _write(directory, common_name, cert, key), cert, key


def make_leaf(
    directory: Path,
    common_name: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    *,
    server: bool,
) -> CertPair:
    """A certificate signed by ``ca``: a server's (SAN localhost, 127.0.0.1) or a client's."""
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    return _write(directory, common_name, cert, key)


@dataclass
class Pki:
    """A server CA with a server certificate, and a client CA with a client certificate."""

    server_ca: Path
    server: CertPair
    client_ca: Path
    client: CertPair
    other_ca: Path
    """A CA that signed nothing here: trusting it instead of ``server_ca`` must fail."""


def make_pki(directory: Path) -> Pki:
    """Generates everything a TLS and an mTLS test need in ``directory``."""
    server_ca, server_ca_cert, server_ca_key = make_ca(directory, "test-server-ca")
    client_ca, client_ca_cert, client_ca_key = make_ca(directory, "test-client-ca")
    other_ca, _, _ = make_ca(directory, "test-other-ca")
    return Pki(
        server_ca=server_ca.cert,
        server=make_leaf(directory, "localhost", (server_ca_cert, server_ca_key), server=True),
        client_ca=client_ca.cert,
        client=make_leaf(directory, "wfa-worker", (client_ca_cert, client_ca_key), server=False),
        other_ca=other_ca.cert,
    )


@dataclass
class TlsProxy:
    """A running proxy: its address and the handshakes it completed."""

    address: str
    handshakes: list[str | None] = field(default_factory=list)
    """Per completed handshake, the client certificate's common name (None without one)."""
    failures: int = 0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@contextlib.asynccontextmanager
async def tls_proxy(pki: Pki, upstream: str, *, require_client_cert: bool) -> AsyncIterator[TlsProxy]:
    """A TLS proxy on 127.0.0.1 (random port) in front of ``upstream`` (``host:port``, plaintext)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server.cert, pki.server.key)
    context.set_alpn_protocols(["h2"])
    if require_client_cert:
        context.load_verify_locations(pki.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    host, _, port = upstream.rpartition(":")
    proxy = TlsProxy(address="")
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert")
        common_name = None
        if peer:
            for rdn in peer.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        common_name = value
        proxy.handshakes.append(common_name)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(handle(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0, ssl=context)
    proxy.address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield proxy
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)
