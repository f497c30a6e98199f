"""One real stack per test session: Redis, Milvus and tritonserver on free
loopback ports, serving the small test models with the stores loaded.

Tests of credentials and of Redis Cluster start their own redis-server
processes: one Redis with a password and an ACL user, and a three-node
cluster, all on loopback. Each server runs through the stack's process
helpers, so a failed start shows the tail of its log and a stop always happens.

Nothing here skips: when a server cannot start, the session fails and the
tail of its log is in the error.
"""

from __future__ import annotations

import os
import random
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import yaml
from ecrs.client.client import RecommendClient
from ecrs.export.repository import export_checkpoint

from ecrs.config import StackConfig, StoreConfig
from ecrs.data.dataset import Dataset
from ecrs.stack.launcher import start_stack, stop_stack
from ecrs.stack.ports import LOOPBACK, pick_free_ports, port_is_free
from ecrs.stack.processes import ServerSpec, spawn, stop_process, wait_until_ready
from ecrs.stack.redis_server import find_redis_server, redis_is_ready
from ecrs.stores.loader import LoadResult, load_stores
from ecrs.training.checkpoint import Checkpoint


@pytest.fixture(scope="session")
def stack(
    small_dataset: Dataset,
    small_checkpoint: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StackConfig]:
    config = StackConfig(
        state_dir=tmp_path_factory.mktemp("stack"), ports=pick_free_ports()
    )
    export_checkpoint(Checkpoint.load(small_checkpoint), config.model_repository)
    start_stack(config)
    try:
        yield config
    finally:
        stop_stack(config.state_dir)


@pytest.fixture(scope="session")
def loaded(stack: StackConfig, small_dataset: Dataset) -> LoadResult:
    return load_stores(small_dataset, stack.model_repository, stack.stores)


@pytest.fixture()
def client(stack: StackConfig, loaded: LoadResult) -> Iterator[RecommendClient]:
    with RecommendClient(stack.triton_grpc_url) as recommend_client:
        yield recommend_client


# The ecrs-client console script installed beside this interpreter.
CLIENT_SCRIPT = str(Path(sys.executable).parent / "ecrs-client")


@pytest.fixture()
def run_client(stack: StackConfig, loaded: LoadResult):
    """Return a function that runs ecrs-client against the loaded stack."""

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [CLIENT_SCRIPT, "--url", stack.triton_grpc_url, *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
APP_USER = "ecrs-app"
# A cluster node also listens on its port + 10000 (the cluster bus), so node
# ports stay below 55536.
NODE_PORTS = range(20000, 45000)
# Redis Cluster clients discover the slot map with CLUSTER SLOTS or SHARDS
# and may send READONLY, so the ACL user of a cluster needs those on top. The
# cluster tests keep their keys under their own prefix.
CLUSTER_PREFIX = "ecrs_cluster"
CLUSTER_ACL = (
    f"~{CLUSTER_PREFIX}:* +cluster|slots +cluster|shards +cluster|nodes +readonly"
)


def compose_acl_rules() -> str:
    """Return the ACL rules that docker-compose.yml gives its Redis user."""
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return compose["services"]["redis"]["environment"]["ECRS_REDIS_ACL"]


@dataclass(frozen=True)
class RedisServers:
    """Started redis-server processes that share one password and ACL user."""

    ports: tuple[int, ...]
    password: str
    username: str
    processes: tuple[subprocess.Popen, ...]

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.ports[0]}/0"


def pick_node_ports(count: int) -> list[int]:
    """Return ports that are free together with their cluster bus ports."""
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.choice(NODE_PORTS)
        if port in chosen or port + 10000 in chosen:
            continue
        if port_is_free(LOOPBACK, port) and port_is_free(LOOPBACK, port + 10000):
            chosen.append(port)
    return chosen


def node_command(port: int, data_dir: Path, password: str, acl: str, cluster: bool):
    command = [
        str(find_redis_server()),
        "--bind", LOOPBACK,
        "--port", str(port),
        "--dir", str(data_dir),
        "--save", "",
        "--appendonly", "no",
        "--protected-mode", "yes",
        "--daemonize", "no",
        "--logfile", "",
        "--requirepass", password,
        "--user", APP_USER, *acl.split(), f">{password}",
    ]  # fmt: skip
    if cluster:
        command += [
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(data_dir / "nodes.conf"),
            "--cluster-node-timeout", "5000",
            # Replicas and resharding authenticate with the same password.
            "--masterauth", password,
        ]  # fmt: skip
    return command


def start_servers(folder: Path, count: int, *, cluster: bool) -> RedisServers:
    """Start ``count`` redis-servers with a random password; stop all on failure."""
    password = secrets.token_urlsafe(16)
    acl = compose_acl_rules() + (f" {CLUSTER_ACL}" if cluster else "")
    ports = pick_node_ports(count)
    processes: list[subprocess.Popen] = []
    try:
        for port in ports:
            data_dir = folder / str(port)
            data_dir.mkdir(parents=True)
            spec = ServerSpec(
                name=f"redis-{port}",
                command=tuple(node_command(port, data_dir, password, acl, cluster)),
                env=dict(os.environ),
                cwd=data_dir,
                log_path=folder / f"redis-{port}.log",
                ports={"redis": port},
                port_checks={"redis": (LOOPBACK, port)},
                probe=lambda port=port: redis_is_ready(LOOPBACK, port, password),
                ready_timeout_s=20.0,
            )
            processes.append(spawn(spec))
            wait_until_ready(spec, processes[-1])
    except BaseException:
        stop_servers(processes)
        raise
    return RedisServers(tuple(ports), password, APP_USER, tuple(processes))


def create_cluster(servers: RedisServers) -> None:
    """Join the servers into one cluster with all 16384 slots spread over them."""
    nodes = [f"{LOOPBACK}:{port}" for port in servers.ports]
    result = subprocess.run(
        ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0",
         "--cluster-yes"],
        env={**os.environ, "REDISCLI_AUTH": servers.password},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def cluster_is_ok(servers: RedisServers) -> bool:
    for port in servers.ports:
        client = redis.Redis(host=LOOPBACK, port=port, password=servers.password)
        try:
            if client.cluster("info").get("cluster_state") != "ok":
                return False
        finally:
            client.close()
    return True


def stop_servers(processes: Sequence[subprocess.Popen]) -> None:
    for process in processes:
        stop_process("redis", process.pid, None, timeout_s=10.0)


def wait_for_cluster(servers: RedisServers, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cluster_is_ok(servers):
        assert time.monotonic() < deadline, "the Redis Cluster did not reach state ok"
        time.sleep(0.2)


@pytest.fixture(scope="session")
def secured_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServers]:
    """One Redis that requires a password and has the compose file's ACL user."""
    servers = start_servers(tmp_path_factory.mktemp("redis-auth"), 1, cluster=False)
    try:
        yield servers
    finally:
        stop_servers(servers.processes)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServers]:
    """A three-node Redis Cluster with a password, no replicas."""
    servers = start_servers(tmp_path_factory.mktemp("redis-cluster"), 3, cluster=True)
    try:
        create_cluster(servers)
        wait_for_cluster(servers)
        yield servers
    finally:
        stop_servers(servers.processes)


@pytest.fixture(scope="session")
def cluster_stores(redis_cluster: RedisServers, stack: StackConfig) -> StoreConfig:
    """Stores on the Redis Cluster, as its ACL user, and on the stack's Milvus
    under their own prefix, so the stack's own collections stay untouched."""
    return StoreConfig(
        redis_url=redis_cluster.url,
        redis_username=redis_cluster.username,
        redis_password=redis_cluster.password,
        redis_cluster=True,
        milvus_uri=stack.stores.milvus_uri,
        key_prefix=CLUSTER_PREFIX,
    )


@pytest.fixture(scope="session")
def cluster_triton(
    cluster_stores: StoreConfig,
    small_dataset: Dataset,
    small_checkpoint: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StackConfig]:
    """A second tritonserver whose models read features from the cluster."""
    config = StackConfig(
        state_dir=tmp_path_factory.mktemp("cluster-stack"),
        ports=pick_free_ports(),
        external_stores=cluster_stores,
    )
    export_checkpoint(Checkpoint.load(small_checkpoint), config.model_repository)
    load_stores(small_dataset, config.model_repository, cluster_stores)
    start_stack(config, services=("triton",))
    try:
        yield config
    finally:
        stop_stack(config.state_dir)


@pytest.fixture()
def cluster_client(cluster_triton: StackConfig) -> Iterator[RecommendClient]:
    with RecommendClient(cluster_triton.triton_grpc_url) as recommend_client:
        yield recommend_client


def make_certificates(folder: Path) -> dict[str, Path]:
    """Write a test CA and a server certificate for 127.0.0.1 signed by it."""
    paths = {
        name: folder / name
        for name in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt")
    }
    extensions = folder / "san.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    commands = [
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", paths["ca.key"], "-out", paths["ca.crt"], "-subj", "/CN=ecrs test CA"],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout",
         paths["server.key"], "-out", paths["server.csr"], "-subj", "/CN=localhost"],
        ["openssl", "x509", "-req", "-in", paths["server.csr"], "-CA", paths["ca.crt"],
         "-CAkey", paths["ca.key"], "-CAcreateserial", "-days", "1",
         "-out", paths["server.crt"], "-extfile", extensions],
    ]  # fmt: skip
    for command in commands:
        result = subprocess.run(
            [str(part) for part in command], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
    return paths


@pytest.fixture(scope="session")
def tls_triton(
    stack: StackConfig,
    loaded: LoadResult,
    small_checkpoint: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[StackConfig, dict[str, Path]]]:
    """A tritonserver that serves gRPC over TLS only, with the session
    stack's stores; yields its settings and the certificate files."""
    certificates = make_certificates(tmp_path_factory.mktemp("certs"))
    config = StackConfig(
        state_dir=tmp_path_factory.mktemp("tls-stack"),
        ports=pick_free_ports(),
        external_stores=stack.stores,
        triton_args=(
            "--grpc-use-ssl=true",
            f"--grpc-server-cert={certificates['server.crt']}",
            f"--grpc-server-key={certificates['server.key']}",
        ),
    )
    export_checkpoint(Checkpoint.load(small_checkpoint), config.model_repository)
    start_stack(config, services=("triton",))
    try:
        yield config, certificates
    finally:
        stop_stack(config.state_dir)
