"""Test certificates made with openssl: a CA, another CA, and a server certificate naming 127.0.0.1.

As Memorystore's are reported to be, the server certificate names its IP only as the common
name (no subjectAltName), so Python's host name check refuses it while the chain to the CA holds.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TestPki:
    directory: Path

    @property
    def ca_pem(self) -> str:
        return (self.directory / "ca.crt").read_text()

    @property
    def other_ca_pem(self) -> str:
        return (self.directory / "other-ca.crt").read_text()

    def server_arguments(self) -> tuple[str, ...]:
        """redis-server's TLS options for the server certificate (clients need none of their own)."""
        return (
            "--tls-cert-file", str(self.directory / "server.crt"),
            "--tls-key-file", str(self.directory / "server.key"),
            "--tls-ca-cert-file", str(self.directory / "ca.crt"),
            "--tls-auth-clients", "no",
        )  # fmt: skip


def tls_problem() -> str | None:
    """Why no TLS redis-server can run here (the system's is the one built with TLS), or None."""
    if shutil.which("redis-server") is None or shutil.which("openssl") is None:
        return "needs redis-server (built with TLS) and openssl on PATH"
    return None


def make_test_pki(directory: Path) -> TestPki:
    """Write ca.crt, other-ca.crt and a server.crt/server.key signed by ca into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    _make_ca("ca", directory)
    _make_ca("other-ca", directory)
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr", cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-out", "server.crt", cwd=directory,
    )  # fmt: skip
    return TestPki(directory)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_ca(name: str, cwd: Path) -> None:
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=predcache test {name}",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=cwd,
    )  # fmt: skip
