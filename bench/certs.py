"""A throw-away CA and a 127.0.0.1 certificate for one benchmark run.

Every TLS listener of a run (edge, nginx, the browser page) serves the same certificate, and
every client trusts only this CA, so nothing is installed system-wide. The key is written as
PKCS#8 because granian accepts no other form; Chromium trusts the certificate through the
SHA-256 of its public key (`--ignore-certificate-errors-spki-list`). trustme (and the
cryptography it brings) is the `bench` extra, imported only here so `bench sim` and `--help`
work from a base install.
"""
from __future__ import annotations

import base64
import hashlib
import ssl
from dataclasses import dataclass
from pathlib import Path


class CertsUnavailable(RuntimeError):
    """trustme is not installed, so a run has no certificate for its TLS listeners."""


@dataclass(frozen=True)
class Certs:
    cert: Path      # server certificate chain (PEM)
    key: Path       # its key, PKCS#8 PEM
    ca: Path        # the CA clients trust
    spki: str       # base64 SHA-256 of the certificate's public key, for Chromium

    def client_context(self, alpn: list[str]) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.set_alpn_protocols(alpn)
        return ctx


def make_certs(directory: Path) -> Certs:
    try:
        import trustme
        from cryptography.hazmat.primitives import serialization
        from cryptography.x509 import load_pem_x509_certificate
    except ImportError:
        raise CertsUnavailable("the benchmarks' TLS certificate needs trustme: "
                               "pip install 'omero-edge[bench]'") from None
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    paths = Certs(directory / "cert.pem", directory / "key.pem", directory / "ca.pem", "")
    paths.cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    paths.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    ca.cert_pem.write_to_path(str(paths.ca))
    public = load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    spki = base64.b64encode(hashlib.sha256(der).digest()).decode()
    return Certs(paths.cert, paths.key, paths.ca, spki)
