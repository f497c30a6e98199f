"""Faults injected into a running stack while the load runs.

Each fault breaks one dependency and brings it back the way an operator or a
supervisor would: ``kill -9`` of Redis or Milvus and a restart of that server
alone, ``kill -9`` of one Triton model's stub process (Triton's Python
backend starts a new stub by itself), and a Redis ``CLIENT PAUSE`` longer
than the store timeout. ``Fault.dependency`` is the word every error during
the fault must contain: the store's name in ECRS's UNAVAILABLE messages, or
the model's name. A fault's ``inject`` may return a ``DeadlineCheck`` of
requests it sent with a short client deadline while the dependency hung.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from ecrs.config import StackConfig
from ecrs.errors import StackError
from ecrs.faults.load import probe_deadline
from ecrs.faults.memory import stack_processes
from ecrs.faults.timeline import DeadlineCheck, check_deadline
from ecrs.stack import milvus_server
from ecrs.stack.launcher import stack_status, start_stack
from ecrs.stack.processes import wait_for_exit

logger = logging.getLogger(__name__)

# Seconds a killed store stays down before it is started again.
OUTAGE_S = 10.0
# Milliseconds of the Redis CLIENT PAUSE: several store timeouts (2 s).
PAUSE_MS = 8000
# Client deadline of the requests sent while Redis is paused: shorter than
# the store timeout, so that only the client's deadline can end them early.
PROBE_DEADLINE_S = 0.5
KILL_WAIT_S = 10.0
# Seconds within which a request must fail while Redis is paused: twice the
# 2 s store timeout, because a request can wait for the one ahead of it to
# time out before its own read times out, plus 1 s of scheduling on a
# loaded 2-core machine.
PAUSED_ERROR_BOUND_S = 5.0


@dataclass(frozen=True)
class Fault:
    """A fault: its name, the dependency its errors must name, how it is
    injected and repaired, the seconds within which serving must have
    recovered after the repair (``recovery_bound_s``), and the servers that
    the repair itself restarts. With ``error_latency_bound_s``, every failed
    request must fail within that many seconds."""

    name: str
    dependency: str
    inject: Callable[[StackConfig], DeadlineCheck | None]
    recovery_bound_s: float
    restarts: tuple[str, ...] = ()
    error_latency_bound_s: float | None = None


def server_pid(config: StackConfig, name: str) -> int:
    """Return the pid of a running server of the stack."""
    for status in stack_status(config.state_dir):
        if status.name == name and status.running:
            return status.pid
    raise StackError(f"{name} is not running from {config.state_dir}")


def server_pids(config: StackConfig) -> dict[str, int]:
    """Return the pid of every running server, to tell whether one restarted."""
    return {s.name: s.pid for s in stack_status(config.state_dir) if s.running}


def kill_group(pid: int) -> None:
    """Send SIGKILL to a server's process group and wait until its leader exits."""
    os.killpg(pid, signal.SIGKILL)
    if not wait_for_exit(pid, None, KILL_WAIT_S):
        raise StackError(f"pid {pid} still runs {KILL_WAIT_S:.0f} s after SIGKILL")


def kill_and_restart(
    name: str, outage_s: float = OUTAGE_S
) -> Callable[[StackConfig], None]:
    """Return a fault action: ``kill -9`` one server, wait, start it alone again."""

    def act(config: StackConfig) -> None:
        pid = server_pid(config, name)
        logger.info("killing %s (pid %d) with SIGKILL", name, pid)
        kill_group(pid)
        if name == milvus_server.NAME:
            milvus_server.remove_server_id_file(pid)
        time.sleep(outage_s)
        logger.info("starting %s again", name)
        start_stack(config, services=(name,))

    return act


def kill_stub(model: str) -> Callable[[StackConfig], None]:
    """Return a fault action: ``kill -9`` the stub process of one model."""

    def act(config: StackConfig) -> None:
        label = f"stub:{model}"
        pids = [
            pid
            for pid, name in stack_processes(config.state_dir).items()
            if name == label
        ]
        if not pids:
            raise StackError(f"no stub process of {model} runs in {config.state_dir}")
        logger.info("killing the stub of %s (pid %d) with SIGKILL", model, pids[0])
        os.kill(pids[0], signal.SIGKILL)

    return act


def pause_redis(
    probe_user: str, pause_ms: int = PAUSE_MS
) -> Callable[[StackConfig], DeadlineCheck]:
    """Return a fault action: pause every Redis client for ``pause_ms`` and,
    meanwhile, send ``probe_user``'s requests with a short client deadline."""

    def act(config: StackConfig) -> DeadlineCheck:
        admin = redis.Redis.from_url(config.stores.redis_url)
        try:
            admin.execute_command("CLIENT", "PAUSE", pause_ms, "ALL")
        finally:
            admin.close()
        paused = time.monotonic()
        # Stop probing a second before the pause ends, so that every probe
        # meets the hung store.
        probes = probe_deadline(
            config.triton_grpc_url,
            probe_user,
            PROBE_DEADLINE_S,
            pause_ms / 1000 - 1.0,
        )
        time.sleep(max(0.0, pause_ms / 1000 - (time.monotonic() - paused)))
        return check_deadline(probes, PROBE_DEADLINE_S)

    return act


def standard_faults(probe_user: str) -> list[Fault]:
    """Return the suite's faults in the order it runs them; ``probe_user``
    is a known user whose requests probe client deadlines."""
    return [
        Fault(
            "kill -9 Redis, restart it",
            "Redis",
            kill_and_restart("redis"),
            10.0,
            restarts=("redis",),
        ),
        Fault(
            "kill -9 Milvus, restart it",
            "Milvus",
            kill_and_restart("milvus"),
            30.0,
            restarts=("milvus",),
        ),
        Fault(
            "kill -9 the deepfm_rank stub",
            "deepfm_rank",
            kill_stub("deepfm_rank"),
            15.0,
        ),
        Fault(
            "pause Redis (CLIENT PAUSE)",
            "Redis",
            pause_redis(probe_user),
            5.0,
            error_latency_bound_s=PAUSED_ERROR_BOUND_S,
        ),
    ]
