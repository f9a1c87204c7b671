"""Loopback networking for tests and bench scripts: a free port and a throwaway certificate.

Imports nothing beyond the standard library, so bench/ can use it (`from tests.net import ...`
after putting the checkout on sys.path) without the test extras.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed_cert(folder: Path, host: str = "localhost") -> tuple[Path, Path]:
    """A throwaway certificate (cert.pem, key.pem in `folder`) for `host` and 127.0.0.1, made
    with the openssl CLI."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            f"/CN={host}",
            "-addext",
            f"subjectAltName=DNS:{host},IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
