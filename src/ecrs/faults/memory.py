"""Resident memory of the stack's processes and the size of its shared memory.

Linux only: resident set sizes come from ``VmRSS`` in ``/proc/PID/status``,
and the Python backend's shared-memory regions are files in ``/dev/shm``
whose names start with the prefix that the stack passes to tritonserver
(``shm-region-prefix-name``). Each server leads its own process group, so
the group holds tritonserver's Python backend stubs too; a stub is labelled
with the model it serves, and stubs of one model (several instances) add up.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ecrs.serving.stub_watchdog import STUB_NAME, stub_model
from ecrs.stack.launcher import stack_status
from ecrs.stack.processes import live_group_members
from ecrs.stack.runfile import read_records
from ecrs.stack.triton_server import SHM_DIR, shm_prefix

SAMPLE_INTERVAL_S = 5.0


@dataclass(frozen=True)
class MemorySample:
    """Memory at one moment: resident MiB per process label, and the MiB of
    the stack's files in ``/dev/shm``."""

    at_s: float
    rss_mib: dict[str, float]
    shm_mib: float


def rss_kib(pid: int) -> int | None:
    """Return the resident set size of ``pid`` in KiB, or None once it exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None  # a zombie has no VmRSS line


def process_label(server: str, pid: int) -> str:
    """Name a process of a server's group: the server, or ``stub:<model>``."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return server
    if argv and argv[0].decode(errors="replace").endswith(STUB_NAME) and len(argv) > 1:
        return f"stub:{stub_model(argv[1].decode(errors='replace'))}"
    return server


def stack_processes(state_dir: Path) -> dict[int, str]:
    """Return the live pids of the stack's process groups with their labels."""
    processes = {}
    for server in stack_status(state_dir):
        if not server.running:
            continue
        for pid in live_group_members(server.pid):
            processes[pid] = process_label(server.name, pid)
    return processes


def stack_shm_prefix(state_dir: Path) -> str | None:
    """Return the shared-memory prefix that the running tritonserver was given."""
    record = read_records(state_dir).get("triton")
    return None if record is None else shm_prefix(record.command)


def shm_mib(prefix: str | None) -> float:
    """Return the MiB of ``/dev/shm`` files whose names start with ``prefix``.

    The size is the pages in use (``st_blocks``), not the file's nominal
    length, because the Python backend creates large sparse regions.
    """
    if not prefix:
        return 0.0
    total = 0
    for path in SHM_DIR.glob(f"{prefix}*"):
        try:
            total += path.stat().st_blocks * 512
        except OSError:
            continue  # removed meanwhile
    return total / 2**20


def sample(state_dir: Path, at_s: float) -> MemorySample:
    """Measure the stack once: resident MiB per label, and its shared memory."""
    rss: dict[str, float] = {}
    for pid, label in stack_processes(state_dir).items():
        kib = rss_kib(pid)
        if kib is not None:
            rss[label] = rss.get(label, 0.0) + kib / 1024
    return MemorySample(at_s, rss, shm_mib(stack_shm_prefix(state_dir)))


@dataclass
class MemorySampler:
    """Sample the stack's memory every ``interval_s`` on a background thread.

    ``clock`` returns the time axis of the samples (the load's seconds).
    """

    state_dir: Path
    clock: object
    interval_s: float = SAMPLE_INTERVAL_S
    samples: list[MemorySample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="ecrs-memory", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=self.interval_s + 5)

    def _run(self) -> None:
        while True:
            started = time.monotonic()
            self.samples.append(sample(self.state_dir, self.clock()))
            waited = self.interval_s - (time.monotonic() - started)
            if self._stopped.wait(max(0.0, waited)):
                return
