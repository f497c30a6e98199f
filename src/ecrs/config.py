"""Settings shared by the command line, the local stack and the served models.

Library code takes these objects as arguments. Environment variables are read
only at the edges: the CLI, the stack launcher and a Triton model's
``initialize``, through ``StoreConfig.from_env``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STATE_DIR = ".ecrs"
STATE_DIR_ENV = "ECRS_STATE_DIR"

# Environment variables that tell a served model where the stores are.
REDIS_URL_ENV = "ECRS_REDIS_URL"
MILVUS_URI_ENV = "ECRS_MILVUS_URI"
KEY_PREFIX_ENV = "ECRS_KEY_PREFIX"


@dataclass(frozen=True, kw_only=True)
class StoreConfig:
    """Addresses of the feature store (Redis) and the vector store (Milvus).

    ``timeout_s`` bounds every store call, in seconds. ``key_prefix`` starts
    every Redis key, so several deployments can share one Redis.
    """

    redis_url: str = "redis://127.0.0.1:16379/0"
    milvus_uri: str = "http://127.0.0.1:19530"
    key_prefix: str = "ecrs"
    timeout_s: float = 2.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> StoreConfig:
        environ = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            redis_url=environ.get(REDIS_URL_ENV, defaults.redis_url),
            milvus_uri=environ.get(MILVUS_URI_ENV, defaults.milvus_uri),
            key_prefix=environ.get(KEY_PREFIX_ENV, defaults.key_prefix),
        )

    def to_env(self) -> dict[str, str]:
        return {
            REDIS_URL_ENV: self.redis_url,
            MILVUS_URI_ENV: self.milvus_uri,
            KEY_PREFIX_ENV: self.key_prefix,
        }


@dataclass(frozen=True, kw_only=True)
class Ports:
    """TCP ports of the local stack, all bound on ``host``.

    Redis defaults to 16379, not 6379, because installing Debian's
    redis-server package starts a system Redis on 6379 where systemd runs.
    """

    redis: int = 16379
    milvus: int = 19530
    triton_grpc: int = 8001
    triton_http: int = 8000
    triton_metrics: int = 8002


@dataclass(frozen=True, kw_only=True)
class StackConfig:
    """The local stack: its state folder, bind address and ports."""

    state_dir: Path
    host: str = "127.0.0.1"
    ports: Ports = Ports()

    @property
    def stores(self) -> StoreConfig:
        return StoreConfig(
            redis_url=f"redis://{self.host}:{self.ports.redis}/0",
            milvus_uri=f"http://{self.host}:{self.ports.milvus}",
        )

    @property
    def triton_grpc_url(self) -> str:
        return f"{self.host}:{self.ports.triton_grpc}"

    @property
    def model_repository(self) -> Path:
        return self.state_dir / "model_repository"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"


def default_state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_ENV, DEFAULT_STATE_DIR)).resolve()
