"""Redis for the local stack: the feature store.

Data lives in ``<state_dir>/redis/``: an append-only file, synced to disk every
second, and RDB snapshots. A crash loses about the last second of writes at
most. On SIGTERM Redis syncs the file and writes a final snapshot, so a stop
loses nothing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import redis

from ecrs.config import StackConfig
from ecrs.errors import StackError
from ecrs.stack.processes import ServerSpec

NAME = "redis"
READY_TIMEOUT_S = 20.0
PROBE_TIMEOUT_S = 1.0
# RDB snapshot points: after 900 s if 1 key changed, 300 s if 10, 60 s if 10,000.
SAVE_POINTS = "900 1 300 10 60 10000"


def find_redis_server() -> Path:
    path = shutil.which("redis-server")
    if path is None:
        raise StackError(
            "redis-server is not on PATH; install it (Debian: apt-get install "
            "redis-server) or add its folder to PATH"
        )
    return Path(path)


def redis_command(executable: Path, config: StackConfig, data_dir: Path) -> list[str]:
    return [
        str(executable),
        "--bind", config.host,
        "--port", str(config.ports.redis),
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", SAVE_POINTS,
        "--dbfilename", "dump.rdb",
        "--daemonize", "no",
        "--protected-mode", "yes",
        # An empty log file name sends the log to stdout, which spawn() appends
        # to logs/redis.log.
        "--logfile", "",
    ]  # fmt: skip


def redis_is_ready(host: str, port: int, password: str | None = None) -> bool:
    """Return whether Redis replies to PING, which fails while it loads its data."""
    client = redis.Redis(
        host=host,
        port=port,
        password=password,
        socket_timeout=PROBE_TIMEOUT_S,
        socket_connect_timeout=PROBE_TIMEOUT_S,
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def redis_spec(
    config: StackConfig, *, ready_timeout_s: float = READY_TIMEOUT_S
) -> ServerSpec:
    data_dir = config.state_dir / NAME
    data_dir.mkdir(parents=True, exist_ok=True)
    host, port = config.host, config.ports.redis
    return ServerSpec(
        name=NAME,
        command=tuple(redis_command(find_redis_server(), config, data_dir)),
        env=dict(os.environ),
        cwd=data_dir,
        log_path=config.logs_dir / f"{NAME}.log",
        ports={"redis": port},
        port_checks={"redis": (host, port)},
        probe=lambda: redis_is_ready(host, port),
        ready_timeout_s=ready_timeout_s,
    )
