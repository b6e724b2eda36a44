"""Refuse outbound network connections in every Python process of the test suite.

``tests/conftest.py`` puts this folder first on ``PYTHONPATH``, so the test process and every
Python subprocess it starts (CLI runs, sweep trials, DataLoader workers) import it at start-up.
Connections and name lookups of loopback and Unix-socket addresses pass; any other one raises
``ConnectionRefusedError`` and is appended to the file named by ``HDRLAB_NETGUARD_LOG``, which the
suite checks at its end: nothing in hdrlab may reach the network at run time.
"""

from __future__ import annotations

import ipaddress
import os
import socket

_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


def _is_local(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _refuse(what: str) -> None:
    log = os.environ.get("HDRLAB_NETGUARD_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {what}\n")
    raise ConnectionRefusedError(f"network access refused in the hdrlab test suite: {what}")


def _check_address(sock: socket.socket, address: object) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple) and address:
        if not _is_local(address[0]):
            _refuse(f"connect {address[0]}:{address[1] if len(address) > 1 else ''}")


_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def _guarded_connect(self: socket.socket, address: object) -> None:
    _check_address(self, address)
    return _connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    _check_address(self, address)
    return _connect_ex(self, address)


def _guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
    if host is not None and not _is_local(host):
        _refuse(f"lookup {host!r}")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
socket.getaddrinfo = _guarded_getaddrinfo
