"""Start, stop and inspect the local stack: Redis, Milvus standalone and tritonserver.

All state lives in ``config.state_dir``::

    redis/            Redis data (append-only file and RDB snapshots)
    milvus/           Milvus binaries, configs and data
    triton/           tritonserver's backend directory and the virtual
                      environment of its Python backend stub
    model_repository/ the Triton model repository
    logs/<server>.log each server's stdout and stderr, appended across starts
    run/stack.json    pids, ports and command lines of the running servers

The servers keep running after the Python process that started them exits;
``stop_stack`` stops them. Starting a server that already runs from the same
state folder on the requested ports leaves it running as it is. It is not
restarted, even if the model repository changed. Starting it on other ports
raises ``StackError``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ecrs.config import StackConfig
from ecrs.errors import ConfigError, StackError
from ecrs.stack import milvus_server, redis_server, triton_server
from ecrs.stack.ports import ALL_INTERFACES, check_distinct, check_ports_free
from ecrs.stack.processes import (
    ServerSpec,
    is_running,
    process_start_time,
    spawn,
    stop_process,
    wait_until_ready,
)
from ecrs.stack.runfile import ServerRecord, locked, read_records, write_records

logger = logging.getLogger(__name__)

SERVICES = ("redis", "milvus", "triton")
# Triton's models call the stores, so Triton stops first and starts last.
STOP_ORDER = ("triton", "milvus", "redis")
# Milvus took up to 30 s to stop after SIGTERM on a 2-core machine, the graceful
# stop timeout that milvus_server sets.
STOP_TIMEOUT_S = 60.0


@dataclass(frozen=True, kw_only=True)
class ServerStatus:
    """A server recorded in the run file, and whether its process still runs."""

    name: str
    pid: int
    running: bool
    host: str
    ports: dict[str, int]
    log_path: Path
    ready_s: float | None


def start_stack(
    config: StackConfig,
    *,
    services: Sequence[str] = SERVICES,
    python_paths: Sequence[Path] = (),
    ready_timeouts_s: Mapping[str, float] | None = None,
) -> None:
    """Start the given servers in the background and wait until each is ready.

    Servers start in the order Redis, Milvus, Triton, whatever the order of
    ``services``. Triton's Python models import from the running interpreter's
    site-packages, then from the entries of this process's ``PYTHONPATH``,
    then from ``python_paths``: folders of model code that is not installed,
    such as an ECRS source checkout. ``ready_timeouts_s`` overrides a server's
    ready timeout, in seconds, by name.

    Every port is checked before any server starts, and a port in use raises
    ``StackError`` naming it. If a server exits or is not ready in time, the
    servers this call started are stopped and ``StackError`` shows an excerpt
    of the failed server's log. A relative ``config.state_dir`` is resolved
    against the current directory first.
    """
    names = _ordered_services(services)
    config = replace(config, state_dir=Path(config.state_dir).resolve())
    check_distinct(config.ports)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    with locked(config.state_dir):
        records = _running_records(config.state_dir)
        to_start = [
            name for name in names if not _already_running(config, name, records)
        ]
        # The requested ports first, before the slow steps of building the specs
        # (unpacking Milvus), then every port including Milvus's internal ones.
        for name in to_start:
            check_ports_free(_requested_port_checks(config, name), server=name)
        specs = [
            _build_spec(name, config, python_paths, ready_timeouts_s)
            for name in to_start
        ]
        for spec in specs:
            check_ports_free(spec.port_checks, server=spec.name)
        started: list[str] = []
        try:
            for spec in specs:
                started.append(spec.name)
                _start_server(spec, config, records)
        except BaseException:
            _stop_servers(config.state_dir, records, reversed(started), STOP_TIMEOUT_S)
            raise


def stop_stack(state_dir: Path, *, timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
    """Stop every server recorded in the state folder; return the names stopped.

    Each server gets SIGTERM and ``timeout_s`` seconds to exit, then SIGKILL.
    The run file is removed once no server is left in it. Servers that had
    already exited are dropped from it and not listed.
    """
    state_dir = Path(state_dir)
    if not (state_dir / "run").is_dir():
        return []
    with locked(state_dir):
        records = read_records(state_dir)
        order = [name for name in STOP_ORDER if name in records]
        order += [name for name in records if name not in order]
        return _stop_servers(state_dir, records, order, timeout_s)


def stack_status(state_dir: Path) -> list[ServerStatus]:
    """Return the servers recorded in the state folder, in start order."""
    records = read_records(Path(state_dir))
    ordered = sorted(records.values(), key=lambda r: _start_rank(r.name))
    return [
        ServerStatus(
            name=record.name,
            pid=record.pid,
            running=is_running(record.pid, record.start_time),
            host=record.host,
            ports=dict(record.ports),
            log_path=Path(record.log_path),
            ready_s=record.ready_s,
        )
        for record in ordered
    ]


def _start_rank(name: str) -> int:
    return SERVICES.index(name) if name in SERVICES else len(SERVICES)


def _ordered_services(services: Sequence[str]) -> list[str]:
    unknown = [name for name in services if name not in SERVICES]
    if unknown:
        raise ConfigError(
            f"unknown service {unknown[0]!r}; choose from {', '.join(SERVICES)}"
        )
    return [name for name in SERVICES if name in services]


def _running_records(state_dir: Path) -> dict[str, ServerRecord]:
    """Read the run file, forgetting servers whose process has exited."""
    records = read_records(state_dir)
    for name, record in list(records.items()):
        if not is_running(record.pid, record.start_time):
            logger.warning(
                "%s (pid %d) is in %s's run file but no longer runs; forgetting it",
                name,
                record.pid,
                state_dir,
            )
            del records[name]
    write_records(state_dir, records)
    return records


def _requested_ports(config: StackConfig, name: str) -> dict[str, int]:
    ports = config.ports
    requested = {
        "redis": {"redis": ports.redis},
        "milvus": {"proxy": ports.milvus},
        "triton": {
            "grpc": ports.triton_grpc,
            "http": ports.triton_http,
            "metrics": ports.triton_metrics,
        },
    }
    return requested[name]


def _requested_port_checks(
    config: StackConfig, name: str
) -> dict[str, tuple[str, int]]:
    # Milvus binds its ports on every interface, whatever config.host is.
    host = ALL_INTERFACES if name == milvus_server.NAME else config.host
    return {role: (host, port) for role, port in _requested_ports(config, name).items()}


def _already_running(
    config: StackConfig, name: str, records: Mapping[str, ServerRecord]
) -> bool:
    """Return True if ``name`` runs on the requested ports; raise if on others."""
    record = records.get(name)
    if record is None:
        return False
    requested = _requested_ports(config, name)
    recorded = {role: record.ports.get(role) for role in requested}
    if record.host == config.host and recorded == requested:
        logger.info(
            "%s already runs (pid %d) on %s %s; leaving it running",
            name,
            record.pid,
            record.host,
            requested,
        )
        return True
    raise StackError(
        f"{name} already runs from {config.state_dir} (pid {record.pid}) on "
        f"{record.host} {recorded}, not on the requested {config.host} {requested}; "
        "stop it first ('ecrs stack stop') or request the ports it runs on"
    )


def _build_spec(
    name: str,
    config: StackConfig,
    python_paths: Sequence[Path],
    ready_timeouts_s: Mapping[str, float] | None,
) -> ServerSpec:
    timeout = (ready_timeouts_s or {}).get(name)
    if name == "redis":
        return redis_server.redis_spec(
            config, ready_timeout_s=timeout or redis_server.READY_TIMEOUT_S
        )
    if name == "milvus":
        return milvus_server.milvus_spec(
            config, ready_timeout_s=timeout or milvus_server.READY_TIMEOUT_S
        )
    return triton_server.triton_spec(
        config,
        python_paths=python_paths,
        ready_timeout_s=timeout or triton_server.READY_TIMEOUT_S,
    )


def _start_server(
    spec: ServerSpec, config: StackConfig, records: dict[str, ServerRecord]
) -> None:
    process = spawn(spec)
    record = ServerRecord(
        name=spec.name,
        pid=process.pid,
        start_time=process_start_time(process.pid),
        host=config.host,
        ports=dict(spec.ports),
        command=list(spec.command),
        log_path=str(spec.log_path),
    )
    # Record the pid before waiting, so stop_stack finds a server whose start
    # was interrupted.
    records[spec.name] = record
    write_records(config.state_dir, records)
    logger.info(
        "started %s (pid %d); waiting up to %.0f s until it is ready",
        spec.name,
        process.pid,
        spec.ready_timeout_s,
    )
    ready_s = wait_until_ready(spec, process)
    records[spec.name] = replace(record, ready_s=round(ready_s, 1))
    write_records(config.state_dir, records)
    logger.info(
        "%s is ready after %.1f s on %s %s", spec.name, ready_s, config.host, spec.ports
    )


def _stop_servers(
    state_dir: Path,
    records: dict[str, ServerRecord],
    names: Iterable[str],
    timeout_s: float,
) -> list[str]:
    stopped = []
    for name in list(names):
        record = records.get(name)
        if record is None:
            continue
        if stop_process(name, record.pid, record.start_time, timeout_s=timeout_s):
            stopped.append(name)
            logger.info("stopped %s (pid %d)", name, record.pid)
        if name == milvus_server.NAME:
            milvus_server.remove_server_id_file(record.pid)
        if name == triton_server.NAME:
            triton_server.remove_shm_regions(record.command)
        del records[name]
        write_records(state_dir, records)
    return stopped
