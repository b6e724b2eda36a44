"""The suite runs with outbound network refused (``tests/support/netguard``, installed by conftest)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest


def _attempts() -> list[str]:
    with open(os.environ["HDRLAB_NETGUARD_LOG"], encoding="utf-8") as f:
        return f.read().splitlines()


def test_outbound_connections_are_refused_and_loopback_is_not(tmp_path, monkeypatch):
    monkeypatch.setenv("HDRLAB_NETGUARD_LOG", str(tmp_path / "log"))  # keep the suite's own log clean
    with pytest.raises(ConnectionRefusedError, match="203.0.113.7"):
        socket.create_connection(("203.0.113.7", 443), timeout=1)
    with pytest.raises(ConnectionRefusedError, match="example.org"):
        socket.getaddrinfo("example.org", 443)
    assert len(_attempts()) == 2
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    with socket.create_connection(server.getsockname(), timeout=1):
        pass
    server.close()


def test_subprocesses_get_the_guard(tmp_path):
    env = {**os.environ, "HDRLAB_NETGUARD_LOG": str(tmp_path / "log")}
    code = "import socket\ntry:\n    socket.create_connection(('198.51.100.1', 80), timeout=1)\nexcept ConnectionRefusedError as e:\n    print(e)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert "network access refused" in out.stdout
    assert (tmp_path / "log").read_text().count("198.51.100.1") == 1
