"""Settings shared by the command line, the local stack and the served models.

Library code takes these objects as arguments. Environment variables are read
only at the edges: the CLI, the stack launcher and a Triton model's
``initialize``, through ``StoreConfig.from_env``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, urlsplit, urlunsplit

from ecrs.errors import ConfigError

DEFAULT_STATE_DIR = ".ecrs"
STATE_DIR_ENV = "ECRS_STATE_DIR"

# Environment variables that tell a served model where the stores are.
REDIS_URL_ENV = "ECRS_REDIS_URL"
MILVUS_URI_ENV = "ECRS_MILVUS_URI"
KEY_PREFIX_ENV = "ECRS_KEY_PREFIX"
REDIS_USERNAME_ENV = "ECRS_REDIS_USERNAME"
REDIS_PASSWORD_ENV = "ECRS_REDIS_PASSWORD"
REDIS_CLUSTER_ENV = "ECRS_REDIS_CLUSTER"
MILVUS_TOKEN_ENV = "ECRS_MILVUS_TOKEN"

REDIS_SCHEMES = ("redis", "rediss")
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("", "0", "false", "no", "off")
MASK = "***"
# The user and password that Milvus creates when authentication is on
# (Milvus 2.3 documentation, "Authenticate User Access").
MILVUS_ROOT_TOKEN = "root:Milvus"


@dataclass(frozen=True, kw_only=True)
class StoreConfig:
    """Addresses and credentials of the feature store (Redis) and the vector
    store (Milvus).

    ``timeout_s`` bounds every store call, in seconds. ``key_prefix`` starts
    every Redis key and Milvus collection name, so several deployments can
    share one Redis and one Milvus. ``redis_cluster`` selects Redis Cluster
    mode, where ``redis_url`` names any one node. ``redis_username`` is a
    Redis ACL user (Redis 6 and newer); without it, ``redis_password`` is the
    ``requirepass`` password. ``milvus_token`` is ``user:password`` or an API
    key. Secrets stay out of ``repr`` and out of every address that ECRS
    prints (see ``masked_url``).
    """

    redis_url: str = "redis://127.0.0.1:16379/0"
    redis_username: str | None = None
    redis_password: str | None = field(default=None, repr=False)
    redis_cluster: bool = False
    milvus_uri: str = "http://127.0.0.1:19530"
    milvus_token: str | None = field(default=None, repr=False)
    key_prefix: str = "ecrs"
    timeout_s: float = 2.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.redis_url)
        if (
            parts.scheme not in REDIS_SCHEMES
            or not parts.hostname
            or not _has_valid_port(parts)
        ):
            raise ConfigError(
                f"Redis URL {masked_url(self.redis_url)!r} is invalid; set "
                f"{REDIS_URL_ENV} to redis://HOST:PORT/DB or rediss://HOST:PORT/DB "
                "for TLS"
            )
        if parts.password and self.redis_password:
            raise ConfigError(
                f"the Redis password is set both in the URL "
                f"{masked_url(self.redis_url)!r} and in {REDIS_PASSWORD_ENV}; "
                "set it in one place only"
            )
        if self.redis_cluster and parts.path not in ("", "/", "/0"):
            raise ConfigError(
                f"Redis URL {masked_url(self.redis_url)!r} selects database "
                f"{parts.path.lstrip('/')}, but Redis Cluster has only database 0; "
                "drop the database from the URL"
            )

    def __repr__(self) -> str:
        return (
            f"StoreConfig(redis_url={self.redis_address!r}, "
            f"redis_username={self.redis_username!r}, "
            f"redis_cluster={self.redis_cluster!r}, "
            f"milvus_uri={self.milvus_address!r}, key_prefix={self.key_prefix!r}, "
            f"timeout_s={self.timeout_s!r})"
        )

    @property
    def redis_address(self) -> str:
        """The Redis URL with its password masked, for messages and logs."""
        return masked_url(self.redis_url)

    @property
    def milvus_address(self) -> str:
        """The Milvus URI with any password masked, for messages and logs."""
        return masked_url(self.milvus_uri)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> StoreConfig:
        environ = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            redis_url=environ.get(REDIS_URL_ENV, defaults.redis_url),
            redis_username=environ.get(REDIS_USERNAME_ENV) or None,
            redis_password=environ.get(REDIS_PASSWORD_ENV) or None,
            redis_cluster=parse_flag(
                environ.get(REDIS_CLUSTER_ENV, ""), REDIS_CLUSTER_ENV
            ),
            milvus_uri=environ.get(MILVUS_URI_ENV, defaults.milvus_uri),
            milvus_token=environ.get(MILVUS_TOKEN_ENV) or None,
            key_prefix=environ.get(KEY_PREFIX_ENV, defaults.key_prefix),
        )

    def to_env(self) -> dict[str, str]:
        """Return the environment variables that ``from_env`` reads back.

        Unset credentials are empty strings, so that they replace any inherited
        from the parent's environment. The result contains the secrets: pass
        it to a child process, never print it.
        """
        return {
            REDIS_URL_ENV: self.redis_url,
            REDIS_USERNAME_ENV: self.redis_username or "",
            REDIS_PASSWORD_ENV: self.redis_password or "",
            REDIS_CLUSTER_ENV: "1" if self.redis_cluster else "0",
            MILVUS_URI_ENV: self.milvus_uri,
            MILVUS_TOKEN_ENV: self.milvus_token or "",
            KEY_PREFIX_ENV: self.key_prefix,
        }


def masked_url(url: str) -> str:
    """Return ``url`` with the password of its user part replaced by ``***``."""
    parts = urlsplit(url)
    user_info, at, host_port = parts.netloc.rpartition("@")
    user, colon, _ = user_info.partition(":")
    if not at or not colon:
        return url
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host_port}"))


def _has_valid_port(parts: SplitResult) -> bool:
    try:
        parts.port  # raises ValueError for a port that is not 0 to 65535
    except ValueError:
        return False
    return True


def parse_flag(text: str, name: str) -> bool:
    """Read an on/off environment variable; raise ``ConfigError`` naming it."""
    value = text.strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ConfigError(
        f"{name}={text!r} is invalid; set it to 1 (on) or 0 (off)"
    )


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
    # Stores outside the stack, which Triton's models then use instead of the
    # stack's own Redis and Milvus (a Redis Cluster, say).
    external_stores: StoreConfig | None = None
    # Further tritonserver flags, such as the gRPC TLS settings.
    triton_args: tuple[str, ...] = ()
    # Start Milvus with user authentication; clients then log in as its
    # built-in user (MILVUS_ROOT_TOKEN).
    milvus_auth: bool = False

    @property
    def stores(self) -> StoreConfig:
        if self.external_stores is not None:
            return self.external_stores
        return StoreConfig(
            redis_url=f"redis://{self.host}:{self.ports.redis}/0",
            milvus_uri=f"http://{self.host}:{self.ports.milvus}",
            milvus_token=MILVUS_ROOT_TOKEN if self.milvus_auth else None,
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
