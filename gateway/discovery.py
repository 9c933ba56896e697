"""``--triton-discover``: the addresses of a name (a Kubernetes headless Service) as replicas.

``resolve`` asks the system's resolver for every A and AAAA record; ``ReplicaPool`` calls
it (or an injected ``Resolver``) every ``discover_interval_s`` and applies
``diff_addresses`` of the old and new lists.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterable

Resolver = Callable[[str, int], Awaitable[Iterable[str]]]


def diff_addresses(current: Iterable[str], resolved: Iterable[str]) -> tuple[list[str], list[str]]:
    """(added, removed): the ``resolved`` urls not in ``current``, the ``current`` ones not
    in ``resolved``, each in its list's order."""
    now, new = list(current), list(resolved)
    return [u for u in new if u not in now], [u for u in now if u not in new]


def split_host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) -> (host, port).

    Raises:
        ValueError: no port, a port that is not 1-65535, or an empty host.
    """
    host, sep, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT")
    if any(c.isspace() or c in "/@?#" for c in host):
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host, int(port)


def host_port(address: str, port: int) -> str:
    """``ADDRESS:PORT``, with brackets around an IPv6 address."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


async def resolve(host: str, port: int) -> list[str]:
    """Every A and AAAA address of ``host`` as ``ADDRESS:PORT``, sorted.

    Raises:
        OSError: the lookup failed (socket.gaierror).
    """
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({host_port(str(info[4][0]), port) for info in infos})
