"""mTLS for the xDS port: server credentials that require a client certificate, and the
check that a stream's certificate backs the node it claims (`identity.py`).

Without TLS, xDS is plaintext and unauthenticated: anyone who can connect can claim any
node and region and read the whole configuration. That is fine on loopback (the demo, a
laptop) and nowhere else, so `serve` refuses a plaintext address beyond loopback unless the
operator says `--insecure` (a mesh that already encrypts and authenticates the hop).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from heliostat.security.identity import refusal


class TlsError(ValueError):
    """TLS material that cannot be used; one line naming the file."""


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path


def _pem(path: Path, what: str, marker: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    if f"-----BEGIN {marker}".encode() not in data:
        raise TlsError(f"the {what} {path} holds no PEM {marker.lower().strip()}")
    return data


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Credentials that require every client to present a certificate `client_ca` signed."""
    cert = _pem(files.cert, "certificate", "CERTIFICATE")
    key = _pem(files.key, "private key", "")
    if b"PRIVATE KEY-----" not in key:
        raise TlsError(f"the private key {files.key} holds no PEM private key")
    ca = _pem(files.client_ca, "client CA", "CERTIFICATE")
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def peer_sans(auth_context: Mapping[str, Iterable[bytes]]) -> list[str]:
    """The URI and DNS subject alternative names of the client certificate of a stream."""
    names = [*auth_context.get("peer_uri", ()), *auth_context.get("peer_dns", ())]
    return [n.decode("utf-8", errors="replace") for n in names]


class NodeAuthorizer:
    """Decides whether a stream's certificate backs the node id and region it claims."""

    def __init__(self, trust_domain: str | None = None) -> None:
        self.trust_domain = trust_domain

    def __call__(
        self, node_id: str, region: str, auth_context: Mapping[str, Iterable[bytes]]
    ) -> str | None:
        """None when allowed, else why not (one line)."""
        return refusal(node_id, region, peer_sans(auth_context), self.trust_domain)
