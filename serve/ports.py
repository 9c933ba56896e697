"""Loopback ports: is one taken, and a free one for a server that wants any."""

from __future__ import annotations

import socket


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something listens on ``host:port`` (a socket only in TIME_WAIT does not count).

    SO_REUSEADDR makes the bind succeed past TIME_WAIT leftovers of a server that just
    stopped, and still fail against a live listener (on this address or on 0.0.0.0).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports the kernel reports free now (another process may still race us)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))  # held open until all are picked, so they are distinct
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()
