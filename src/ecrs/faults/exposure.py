"""Listening TCP sockets of the stack's processes, and which are not on loopback.

Linux only: listening sockets come from ``/proc/net/tcp`` and
``/proc/net/tcp6`` (state ``0A``), and a socket belongs to a process when
one of its ``/proc/PID/fd`` entries links to ``socket:[INODE]``. The stack's
processes are the members of each server's process group, as in
``ecrs.faults.memory``.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from ecrs.faults.memory import stack_processes

LISTEN = "0A"


@dataclass(frozen=True)
class Listener:
    """A listening socket: the process label and pid, the address and port."""

    label: str
    pid: int
    address: str
    port: int

    @property
    def loopback(self) -> bool:
        address = ipaddress.ip_address(self.address)
        mapped = getattr(address, "ipv4_mapped", None)
        return (mapped or address).is_loopback


def decode_address(text: str) -> tuple[str, int]:
    """Decode ``/proc/net/tcp{,6}``'s ``ADDRESS:PORT`` in hex (host byte order
    per 32-bit word, which is little-endian on x86-64 and arm64)."""
    address_hex, port_hex = text.split(":")
    raw = bytes.fromhex(address_hex)
    words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
    return str(ipaddress.ip_address(b"".join(words))), int(port_hex, 16)


def listening_inodes(proc: Path = Path("/proc")) -> dict[int, tuple[str, int]]:
    """Return the inode of every listening TCP socket with its address and port."""
    inodes = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == LISTEN:
                inodes[int(fields[9])] = decode_address(fields[1])
    return inodes


def socket_inodes(pid: int) -> set[int]:
    """Return the inodes of the sockets that ``pid`` has open."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        entries = os.listdir(fd_dir)
    except OSError:
        return inodes
    for entry in entries:
        try:
            target = os.readlink(fd_dir / entry)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def stack_listeners(state_dir: Path) -> list[Listener]:
    """Return every listening socket of the stack's processes."""
    listening = listening_inodes()
    found = []
    for pid, label in stack_processes(state_dir).items():
        for inode in socket_inodes(pid) & listening.keys():
            address, port = listening[inode]
            found.append(Listener(label, pid, address, port))
    return sorted(found, key=lambda item: (item.label, item.port))


def exposed(
    listeners: list[Listener], allowed: set[str] = frozenset()
) -> list[Listener]:
    """Return the listeners off loopback, except those of the ``allowed`` labels."""
    return [
        item for item in listeners if not item.loopback and item.label not in allowed
    ]
