"""The Celery broker's Redis connection: the cache's AUTH string and CA passed on, or the broker's own CA."""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit


def redis_url_with_password(url: str, password: str) -> str:
    """``url`` with ``password`` as its password (kombu reads it from the URL only)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(parts.username or '', safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def redis_broker_tls(
    ca_cert: str, *, check_hostname: bool, var_dir: Path, file_name: str = "redis-ca.pem"
) -> dict[str, Any]:
    """kombu's ``broker_use_ssl`` for a ``rediss://`` broker; a CA given as PEM text is written to a file."""
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": check_hostname}
    if ca_cert:
        if "-----BEGIN" in ca_cert:
            var_dir.mkdir(exist_ok=True)
            path = var_dir / file_name
            if not path.exists() or path.read_text() != ca_cert:
                # Processes starting together (gunicorn workers, Celery children) all get here:
                # each writes its own file and renames it into place, so none reads a partial one.
                with tempfile.NamedTemporaryFile("w", dir=var_dir, delete=False, suffix=".pem") as out:
                    out.write(ca_cert)
                os.replace(out.name, path)
            ca_cert = str(path)
        options["ssl_ca_certs"] = ca_cert
    return options
