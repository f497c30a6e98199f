"""Start a server in the background, wait until it is ready, and stop it.

Servers start in their own session (``start_new_session=True``), so they keep
running after the Python process that started them exits, and a signal to
their process group reaches the helper processes they start (Triton's Python
backend stubs). Their stdout and stderr are appended to one log file.

Liveness checks read ``/proc`` (Linux): a pid counts as the recorded server
only while its start time matches the recorded one, so a pid that the kernel
reuses for another program is never signalled.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ecrs.errors import StackError

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.2
KILL_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 25
ERROR_LINES = 10
LOG_READ_BYTES = 256 * 1024
START_MARKER = "==== "
# Lines that report errors: tritonserver's "E1204 ..." lines, Milvus's [ERROR]
# lines and panics, and any line that contains error, fatal or failed.
ERROR_LINE = re.compile(
    r"^E\d{4} |\[ERROR\]|^panic:|\b(error|fatal|failed)\b", re.IGNORECASE
)

# Children started by this process, kept so that they are reaped when they exit
# (no zombies) and so that Popen does not warn about them when collected.
_children: dict[int, subprocess.Popen] = {}


@dataclass(frozen=True, kw_only=True)
class ServerSpec:
    """How to start one server and how to tell that it is ready.

    ``ports`` maps each port's role to its number, as recorded in the run file.
    ``port_checks`` maps each role to the address and port that must be free
    before the start. ``probe`` returns True once the server serves requests.
    """

    name: str
    command: tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path
    log_path: Path
    ports: Mapping[str, int]
    port_checks: Mapping[str, tuple[str, int]]
    probe: Callable[[], bool]
    ready_timeout_s: float


def spawn(spec: ServerSpec) -> subprocess.Popen:
    """Start the server in a new session with its output appended to its log."""
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with open(spec.log_path, "ab") as log:
        header = f"\n{START_MARKER}{started} ecrs starts: {' '.join(spec.command)}\n"
        log.write(header.encode())
        log.flush()
        try:
            process = subprocess.Popen(
                list(spec.command),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(spec.env),
                cwd=spec.cwd,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as error:
            raise StackError(
                f"{spec.name} failed to start {spec.command[0]}: {error}"
            ) from error
    _children[process.pid] = process
    return process


def wait_until_ready(spec: ServerSpec, process: subprocess.Popen) -> float:
    """Poll ``spec.probe`` until it returns True; return the seconds it took.

    Raises ``StackError`` with an excerpt of the server's log if the server
    exits first or is not ready within ``spec.ready_timeout_s``.
    """
    started = time.monotonic()
    while True:
        exit_code = process.poll()
        if exit_code is not None:
            raise StackError(
                f"{spec.name} exited with code {exit_code} during start. From "
                f"{spec.log_path}:\n{log_excerpt(spec.log_path)}"
            )
        if spec.probe():
            return time.monotonic() - started
        if time.monotonic() - started > spec.ready_timeout_s:
            raise StackError(
                f"{spec.name} (pid {process.pid}) was not ready within "
                f"{spec.ready_timeout_s:.0f} s; raise its ready timeout if the "
                f"machine is slow. From {spec.log_path}:\n"
                f"{log_excerpt(spec.log_path)}"
            )
        time.sleep(POLL_INTERVAL_S)


def process_start_time(pid: int) -> int | None:
    """Return the start time of ``pid`` in clock ticks after boot, or None.

    None means the process does not exist or has exited (a zombie).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces, so split after its ")".
    fields = stat.rsplit(")", 1)[1].split()
    state, start_time = fields[0], fields[19]
    if state in ("Z", "X"):
        return None
    return int(start_time)


def is_running(pid: int, start_time: int | None) -> bool:
    """Return whether ``pid`` is alive and is the process that was recorded."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]
        return False
    current = process_start_time(pid)
    if current is None:
        return False
    return start_time is None or current == start_time


def stop_process(
    name: str, pid: int, start_time: int | None, *, timeout_s: float
) -> bool:
    """Stop a recorded server: SIGTERM, wait, then SIGKILL its process group.

    Returns False if the server was not running. Raises ``StackError`` if it is
    still alive after SIGKILL.
    """
    if not is_running(pid, start_time):
        _report_leftovers(name, pid)
        return False
    logger.info(
        "stopping %s (pid %d); waiting up to %.0f s for it to exit", name, pid, timeout_s
    )
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # It exited after the check above.
    if not wait_for_exit(pid, start_time, timeout_s):
        logger.warning(
            "%s (pid %d) did not stop within %.0f s of SIGTERM; sending SIGKILL",
            name,
            pid,
            timeout_s,
        )
        _signal_group(pid, signal.SIGKILL)
        if not wait_for_exit(pid, start_time, KILL_TIMEOUT_S):
            raise StackError(
                f"{name} (pid {pid}) is still running after SIGKILL; check it "
                f"with `ps -o pid,stat,cmd -p {pid}`"
            )
    _kill_leftovers(name, pid)
    return True


def wait_for_exit(pid: int, start_time: int | None, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for a process to exit; return whether it did."""
    deadline = time.monotonic() + timeout_s
    while is_running(pid, start_time):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_INTERVAL_S)
    return True


def _kill_leftovers(name: str, group_id: int) -> None:
    # Called right after this module saw the recorded leader exit. A server
    # started by spawn() leads its own process group, and Linux keeps a group's
    # id allocated while any member lives, so the group is still the server's.
    leftovers = live_group_members(group_id)
    if leftovers:
        logger.warning(
            "processes %s of %s's group outlived it; sending SIGKILL", leftovers, name
        )
        _signal_group(group_id, signal.SIGKILL)


def _report_leftovers(name: str, group_id: int) -> None:
    # The leader exited before this call, so its pid may since belong to
    # another program that leads a group of its own: warn, never signal.
    if process_start_time(group_id) is not None:
        return
    leftovers = live_group_members(group_id)
    if leftovers:
        logger.warning(
            "%s is not running, but processes %s are in its process group %d; "
            "check them with `ps -o pid,cmd -g %d` and stop them if they are its",
            name,
            leftovers,
            group_id,
            group_id,
        )


def live_group_members(group_id: int) -> list[int]:
    """Return the pids in process group ``group_id`` that have not exited.

    Zombies are left out: they are already dead and wait only to be reaped.
    """
    members = []
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_path.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, process_group = fields[0], int(fields[2])
        if process_group == group_id and state not in ("Z", "X"):
            members.append(int(stat_path.parent.name))
    return members


def _signal_group(group_id: int, signal_number: int) -> None:
    try:
        os.killpg(group_id, signal_number)
    except (ProcessLookupError, PermissionError):
        # The group is gone, or belongs to another user and is not ours to stop.
        pass


def log_excerpt(path: Path, *, tail_lines: int = LOG_TAIL_LINES) -> str:
    """Return the error lines of the latest start and the log's last lines.

    Servers often print a long report after the error that stopped them
    (tritonserver prints its settings table), so the error lines come first.
    """
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - LOG_READ_BYTES))
            text = log.read().decode(errors="replace")
    except OSError as error:
        return f"(log {path} is unreadable: {error})"
    lines = text.splitlines()
    latest_start = max(
        (i for i, line in enumerate(lines) if line.startswith(START_MARKER)), default=0
    )
    errors = [line for line in lines[latest_start:] if ERROR_LINE.search(line)]
    tail = "\n".join(lines[-tail_lines:])
    if not errors:
        return tail
    return (
        "error lines:\n" + "\n".join(errors[-ERROR_LINES:]) + f"\nlast lines:\n{tail}"
    )
