"""Find free TCP ports and check that the stack's ports are free before a start."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import fields

from ecrs.config import Ports
from ecrs.errors import StackError

LOOPBACK = "127.0.0.1"
# Binding this address tests a port on every IPv4 interface (and, on Linux, on
# a dual-stack IPv6 listener too), for servers that cannot bind loopback only.
ALL_INTERFACES = "0.0.0.0"


def port_is_free(host: str, port: int) -> bool:
    """Return whether a server could listen on ``host:port`` now.

    SO_REUSEADDR is set as the servers set it, so connections that linger in
    TIME_WAIT after a stop do not count as use.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOOPBACK) -> int:
    """Return a port that the OS reports free on ``host``.

    NOTE: another process may take the port between this call and the server's
    bind; callers start the server soon after.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return ``count`` different free ports on ``host``."""
    sockets = []
    try:
        # Hold every socket open until all are bound, so no port repeats.
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def pick_free_ports(host: str = LOOPBACK) -> Ports:
    """Return a ``Ports`` with a different free port for every server.

    The ports are free on all interfaces, because Milvus binds its proxy port
    on every interface whatever ``host`` is.
    """
    names = [field.name for field in fields(Ports)]
    return Ports(
        **dict(zip(names, free_ports(len(names), ALL_INTERFACES), strict=True))
    )


# The command-line option of 'ecrs stack start' and 'ecrs main' that sets
# each configurable port, by (server, role).
PORT_FLAGS = {
    ("redis", "redis"): "--redis-port",
    ("milvus", "proxy"): "--milvus-port",
    ("triton", "grpc"): "--triton-grpc-port",
    ("triton", "http"): "--triton-http-port",
    ("triton", "metrics"): "--triton-metrics-port",
}


def check_ports_free(requests: Mapping[str, tuple[str, int]], *, server: str) -> None:
    """Raise ``StackError`` unless every requested port is free.

    ``requests`` maps a port's role (for example ``"grpc"``) to the address and
    port that ``server`` will listen on.
    """
    for role, (host, port) in requests.items():
        if not port_is_free(host, port):
            flag = PORT_FLAGS.get((server, role), "Ports")
            raise StackError(
                f"port {port} on {host} is already in use, but {server} needs it "
                f"as its {role} port; pass another port with {flag} or stop the "
                f"process listening on it (`ss -ltnp 'sport = :{port}'` shows it)"
            )


def check_distinct(ports: Ports) -> None:
    """Raise ``StackError`` if two servers of ``ports`` share a port."""
    by_port: dict[int, list[str]] = {}
    for field in fields(Ports):
        by_port.setdefault(getattr(ports, field.name), []).append(field.name)
    for port, names in by_port.items():
        if len(names) > 1:
            raise StackError(
                f"port {port} is set for {' and '.join(names)}; give each a "
                "different port"
            )
