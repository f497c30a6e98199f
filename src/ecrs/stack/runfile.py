"""The run file ``<state_dir>/run/stack.json``: which servers run, with what.

It records, per server, the pid, the pid's start time, the ports, the command
line and the log file. A lock file next to it keeps two start or stop calls on
one state folder from interleaving.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from ecrs.errors import StackError

RUN_DIR = "run"
RUN_FILE = "stack.json"
LOCK_FILE = "stack.lock"


@dataclass(frozen=True, kw_only=True)
class ServerRecord:
    """One started server as the run file stores it.

    ``start_time`` is the pid's start time in clock ticks after boot (from
    ``/proc``); ``ready_s`` is how many seconds the server took to become ready.
    """

    name: str
    pid: int
    start_time: int | None
    host: str
    ports: dict[str, int]
    command: list[str]
    log_path: str
    ready_s: float | None = None


def run_file(state_dir: Path) -> Path:
    return Path(state_dir) / RUN_DIR / RUN_FILE


def read_records(state_dir: Path) -> dict[str, ServerRecord]:
    """Return the recorded servers by name; empty when no run file exists."""
    path = run_file(state_dir)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise StackError(
            f"run file {path} is unreadable ({error}); stop the servers it lists "
            "by pid if any still run, then delete it"
        ) from error
    servers = data.get("servers", {})
    return {name: ServerRecord(**record) for name, record in servers.items()}


def write_records(state_dir: Path, records: Mapping[str, ServerRecord]) -> None:
    """Replace the run file atomically; remove it when no server is left."""
    path = run_file(state_dir)
    if not records:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"servers": {name: asdict(record) for name, record in records.items()}}
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temporary, path)


@contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the state folder's run directory."""
    run_dir = Path(state_dir) / RUN_DIR
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
