"""Milvus 2.3.5 standalone for the local stack: the vector store.

The binary and its libraries ship LZMA-compressed in the ``milvus`` PyPI
package (its ``milvus-server`` script). This module unpacks them into
``<state_dir>/milvus/bin/``, renders the package's config template into
``<state_dir>/milvus/configs/milvus.yaml`` and runs ``milvus run standalone``
directly. Running the binary, rather than the ``milvus-server`` wrapper, leaves
one process to signal, and sets the HTTP port that the wrapper picks by itself.

Ports. Besides the proxy port (``Ports.milvus``), Milvus listens on internal
ports, and each start gives them free ports (recorded in the run file):

- embedded etcd client and peer ports (2379 and 2380 by default): moved with an
  embedded etcd config file and bound to ``config.host``;
- the HTTP port for ``/healthz`` and metrics (``METRICS_PORT``, 9091 by
  default), the proxy's gRPC port and its internal port, and the gRPC ports of
  rootCoord, queryCoord, queryNode, indexNode, dataCoord and dataNode.

Milvus 2.3.5 binds every port of the second group on all interfaces: it has no
setting for a listen address (measured with ``ss -ltnp``). Setting each
component's ``ip`` to ``config.host`` makes the components register and call
each other on that address, so their own traffic stays on loopback, but the
ports still accept connections from other hosts. ``indexCoord``'s port belongs
to a mode that is off here, so nothing listens on it.
"""

from __future__ import annotations

import base64
import importlib.metadata
import importlib.util
import lzma
import os
import re
import shutil
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from pymilvus import DataType, MilvusClient, MilvusException
from pymilvus.client.types import LoadState
from pymilvus.grpc_gen import common_pb2, milvus_pb2, milvus_pb2_grpc

from ecrs.config import MILVUS_ROOT_TOKEN, StackConfig
from ecrs.errors import StackError
from ecrs.stack.ports import ALL_INTERFACES, free_ports
from ecrs.stack.processes import ServerSpec

NAME = "milvus"
# Measured on a 2-core machine: ready about 2 s after starting on an empty state
# folder, and about 24 s after a restart, which waits for the previous run's
# registrations to expire (see SESSION_TTL_S). The default leaves room for a
# slower or busier machine.
READY_TIMEOUT_S = 180.0
PROBE_TIMEOUT_S = 1.0
# Bounds Milvus's own graceful stop (30 min in the template) so that SIGTERM
# ends it in reasonable time.
GRACEFUL_STOP_TIMEOUT_S = 30
# Lifetime of a component's registration in etcd, in seconds. A stopped Milvus
# 2.3.5 leaves its coordinators registered, and a restart waits until those
# expire: with the template's 30 s, a restart took 54 s on a 2-core machine.
# NOTE: Milvus renews the registrations through its embedded etcd; a process
# that stalls for longer than this loses them.
SESSION_TTL_S = 10
# Milvus 2.3.5 writes this file (a fixed path) and deletes it only when it
# stops cleanly.
SERVER_ID_FILE = "/tmp/milvus/server_id_{pid}"

# Components that register an address in etcd; the template leaves it empty,
# which means "the first non-loopback address".
COMPONENTS = (
    "rootCoord",
    "proxy",
    "queryCoord",
    "queryNode",
    "indexNode",
    "dataCoord",
    "dataNode",
)

# "{{ key }}", "{{ key: default }}", "{{ key(type) }}" or "{{ key(type): default }}".
PLACEHOLDER = re.compile(
    r"\{\{\s*(?P<key>\w+)\s*(?:\(\w+\))?\s*(?::\s*(?P<default>[^}]*?))?\s*\}\}"
)
YAML_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_]+):")


@dataclass(frozen=True, kw_only=True)
class MilvusPorts:
    """Every port Milvus standalone listens on."""

    proxy: int
    proxy_internal: int
    etcd_client: int
    etcd_peer: int
    http: int
    root_coord: int
    query_coord: int
    query_node: int
    index_coord: int
    index_node: int
    data_coord: int
    data_node: int

    @classmethod
    def pick(cls, proxy: int) -> MilvusPorts:
        """Keep the given proxy port and pick free ports for the internal ones."""
        names = [name for name in cls.__dataclass_fields__ if name != "proxy"]
        return cls(
            proxy=proxy,
            **dict(zip(names, free_ports(len(names), ALL_INTERFACES), strict=True)),
        )

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def package_dir() -> Path:
    spec = importlib.util.find_spec("milvus")
    if spec is None or spec.origin is None:
        raise StackError(
            "the milvus package (Milvus 2.3.5 standalone) is not installed; "
            "install the local extra: pip install 'ecrs[local]'"
        )
    return Path(spec.origin).parent


def extract_binaries(source: Path, bin_dir: Path) -> None:
    """Unpack ``source/*.lzma`` into ``bin_dir`` unless this version is unpacked.

    Takes about 4 s the first time, for about 250 MB of binary and libraries.
    """
    stamp = bin_dir / ".milvus-version"
    version = importlib.metadata.version("milvus")
    archives = sorted(source.glob("*.lzma"))
    unpacked = all((bin_dir / archive.stem).is_file() for archive in archives)
    if unpacked and stamp.is_file() and stamp.read_text() == version:
        return
    bin_dir.mkdir(parents=True, exist_ok=True)
    for archive in archives:
        target = bin_dir / archive.stem
        partial = target.with_name(target.name + ".partial")
        with lzma.open(archive) as packed, open(partial, "wb") as out:
            shutil.copyfileobj(packed, out, length=1024 * 1024)
        partial.chmod(0o755)
        os.replace(partial, target)
    stamp.write_text(version)


def render_template(template: str, values: dict[str, object]) -> str:
    """Fill the ``{{ ... }}`` placeholders of the package's config template."""

    def fill(match: re.Match) -> str:
        key = match["key"]
        if key in values:
            return _yaml_scalar(values[key])
        if match["default"] is None:
            raise StackError(
                f"the Milvus config template has a setting {key!r} with no value; "
                "the milvus package changed, so update ecrs.stack.milvus_server"
            )
        return match["default"]

    return PLACEHOLDER.sub(fill, template)


def set_yaml_values(text: str, values: dict[str, object]) -> str:
    """Replace the values of existing keys, named by dotted paths, in YAML text.

    Works on block-style YAML indented by two spaces, like Milvus's template.
    Raises ``StackError`` if a key is not in the text.
    """
    lines = text.splitlines()
    path: list[str] = []
    found = set()
    for index, line in enumerate(lines):
        match = YAML_KEY_LINE.match(line)
        if match is None:
            continue
        level = len(match["indent"]) // 2
        path = [*path[:level], match["key"]]
        dotted = ".".join(path)
        if dotted in values:
            lines[index] = (
                f"{match['indent']}{match['key']}: {_yaml_scalar(values[dotted])}"
            )
            found.add(dotted)
    missing = sorted(set(values) - found)
    if missing:
        raise StackError(
            f"the Milvus config template has no {', '.join(missing)}; the milvus "
            "package changed, so update ecrs.stack.milvus_server"
        )
    return "\n".join(lines) + "\n"


def add_etcd_config_path(text: str, etcd_config: Path) -> str:
    """Add ``etcd.config.path``, which the template lacks, under ``etcd:``."""
    if "\netcd:\n" not in text:
        raise StackError(
            "the Milvus config template has no top-level etcd section; the "
            "milvus package changed, so update ecrs.stack.milvus_server"
        )
    return text.replace(
        "\netcd:\n", f"\netcd:\n  config:\n    path: {etcd_config}\n", 1
    )


def _yaml_scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def etcd_config_text(host: str, ports: MilvusPorts, data_dir: Path) -> str:
    """Return the embedded etcd's config: one member, listening on ``host`` only."""
    client = f"http://{host}:{ports.etcd_client}"
    peer = f"http://{host}:{ports.etcd_peer}"
    return (
        "name: milvus\n"
        f"data-dir: {data_dir}\n"
        f"listen-client-urls: {client}\n"
        f"advertise-client-urls: {client}\n"
        f"listen-peer-urls: {peer}\n"
        f"initial-advertise-peer-urls: {peer}\n"
        f"initial-cluster: milvus={peer}\n"
    )


def write_configs(config: StackConfig, ports: MilvusPorts, milvus_dir: Path) -> Path:
    """Write ``milvus.yaml``, ``etcd.yaml`` and ``glog.conf`` under ``configs/``.

    Returns the path of ``milvus.yaml``.
    """
    configs_dir = milvus_dir / "configs"
    data_dir = milvus_dir / "data"
    configs_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    etcd_data = data_dir / "etcd.data"
    etcd_config = configs_dir / "etcd.yaml"
    etcd_config.write_text(etcd_config_text(config.host, ports, etcd_data))

    template = (package_dir() / "data" / "config.yaml.template").read_text()
    values = _template_values(config.host, ports, data_dir)
    values["authorization_enabled"] = config.milvus_auth
    text = render_template(template, values)
    overrides: dict[str, object] = {f"{name}.ip": config.host for name in COMPONENTS}
    overrides["common.gracefulStopTimeout"] = GRACEFUL_STOP_TIMEOUT_S
    overrides["common.session.ttl"] = SESSION_TTL_S
    text = add_etcd_config_path(set_yaml_values(text, overrides), etcd_config)
    milvus_yaml = configs_dir / "milvus.yaml"
    milvus_yaml.write_text(text)
    # Milvus's C++ part reads its logging settings from configs/glog.conf.
    shutil.copyfile(package_dir() / "data" / "glog.conf", configs_dir / "glog.conf")
    return milvus_yaml


def _template_values(
    host: str, ports: MilvusPorts, data_dir: Path
) -> dict[str, object]:
    return {
        "etcd_port": ports.etcd_client,
        "etcd_log_level": "warn",
        # etcd and Milvus log to stdout, which spawn() appends to logs/milvus.log.
        "etcd_log_path": "stdout",
        "system_log_path": "",
        "etcd_data_dir": data_dir / "etcd.data",
        "local_storage_dir": data_dir,
        "rocksmq_data_dir": data_dir / "rocksmq",
        "root_coord_port": ports.root_coord,
        "proxy_port": ports.proxy,
        "proxy_internal_port": ports.proxy_internal,
        "query_coord_port": ports.query_coord,
        "query_node_port": ports.query_node,
        "index_coord_port": ports.index_coord,
        "index_node_port": ports.index_node,
        "data_coord_port": ports.data_coord,
        "data_node_port": ports.data_node,
        "authorization_enabled": False,
        "tls_mode": 0,
    }


def milvus_is_ready(host: str, ports: MilvusPorts, token: str | None = None) -> bool:
    """Return whether Milvus reports itself healthy, lists collections and
    is loading none of them.

    Checks ``/healthz`` on the HTTP port, then CheckHealth, ShowCollections
    and each collection's load state on the proxy's gRPC port, the one that
    clients use, logged in with ``token`` (user:password) when given. After
    a restart Milvus 2.3.5 passes health checks while it loads the
    collections that were loaded before, and searches of a collection in
    that state time out (measured: for about 20 s after it reported healthy).
    Even once every collection reports Loaded, searches can time out for a
    further 10 to 15 s (measured under the test suite's load), so the last
    check is a one-hit search of each loaded collection.
    """
    return (
        _healthz_ok(host, ports.http)
        and _proxy_serves(host, ports.proxy, token)
        and _loaded_collections_search(host, ports.proxy, token)
    )


def _healthz_ok(host: str, http_port: int) -> bool:
    # An opener without proxy handlers, so no http_proxy setting can send this
    # request off the machine.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    url = f"http://{host}:{http_port}/healthz"
    try:
        with opener.open(url, timeout=PROBE_TIMEOUT_S) as response:
            return response.status == 200 and b"OK" in response.read()
    except (urllib.error.URLError, OSError):
        return False


def _proxy_serves(host: str, port: int, token: str | None) -> bool:
    # gRPC would otherwise route through an http_proxy from the environment.
    options = [("grpc.enable_http_proxy", 0)]
    # Milvus reads credentials from this metadata entry, base64-encoded.
    metadata = (
        [("authorization", base64.b64encode(token.encode()).decode())]
        if token
        else []
    )
    with grpc.insecure_channel(f"{host}:{port}", options=options) as channel:
        stub = milvus_pb2_grpc.MilvusServiceStub(channel)
        try:
            health = stub.CheckHealth(
                milvus_pb2.CheckHealthRequest(),
                timeout=PROBE_TIMEOUT_S,
                metadata=metadata,
            )
            if not health.isHealthy:
                return False
            collections = stub.ShowCollections(
                milvus_pb2.ShowCollectionsRequest(),
                timeout=PROBE_TIMEOUT_S,
                metadata=metadata,
            )
            if collections.status.error_code != 0 or collections.status.code != 0:
                return False
            return not any(
                _is_loading(stub, name, metadata) for name in collections.collection_names
            )
        except grpc.RpcError:
            return False


def _loaded_collections_search(host: str, port: int, token: str | None) -> bool:
    """Return whether a one-hit search of each loaded collection returns
    within the probe timeout, under the consistency level serving uses."""
    client = None
    try:
        client = MilvusClient(
            uri=f"http://{host}:{port}", token=token or "", timeout=PROBE_TIMEOUT_S
        )
        for name in client.list_collections():
            state = client.get_load_state(name)["state"]
            if state != LoadState.Loaded:
                continue
            vector = _vector_field(client.describe_collection(name))
            if vector is None:
                continue
            field_name, dim = vector
            client.search(
                name,
                [[1.0] * dim],
                limit=1,
                anns_field=field_name,
                consistency_level="Bounded",
                timeout=PROBE_TIMEOUT_S,
            )
        return True
    except (MilvusException, grpc.RpcError):
        return False
    finally:
        if client is not None:
            client.close()


def _vector_field(description: dict) -> tuple[str, int] | None:
    """Return the name and dimension of a collection's float vector field."""
    for field in description.get("fields", []):
        if field.get("type") == DataType.FLOAT_VECTOR:
            return field["name"], int(field["params"]["dim"])
    return None


def _is_loading(stub: milvus_pb2_grpc.MilvusServiceStub, name: str, metadata) -> bool:
    reply = stub.GetLoadState(
        milvus_pb2.GetLoadStateRequest(collection_name=name),
        timeout=PROBE_TIMEOUT_S,
        metadata=metadata,
    )
    return reply.state == common_pb2.LoadState.LoadStateLoading


def remove_server_id_file(pid: int) -> None:
    """Delete the ``/tmp/milvus`` file of a Milvus process that has exited."""
    Path(SERVER_ID_FILE.format(pid=pid)).unlink(missing_ok=True)


def milvus_spec(
    config: StackConfig, *, ready_timeout_s: float = READY_TIMEOUT_S
) -> ServerSpec:
    milvus_dir = config.state_dir / NAME
    bin_dir = milvus_dir / "bin"
    extract_binaries(package_dir() / "data" / "bin", bin_dir)
    ports = MilvusPorts.pick(config.ports.milvus)
    milvus_yaml = write_configs(config, ports, milvus_dir)
    token = MILVUS_ROOT_TOKEN if config.milvus_auth else None

    library_path = os.pathsep.join(
        part for part in (str(bin_dir), os.environ.get("LD_LIBRARY_PATH", "")) if part
    )
    env = dict(
        os.environ,
        DEPLOY_MODE="STANDALONE",
        METRICS_PORT=str(ports.http),
        MILVUSCONF=str(milvus_yaml.parent),
        LD_LIBRARY_PATH=library_path,
    )

    # The proxy port, like the internal ones, is bound on every interface.
    checks = {role: (ALL_INTERFACES, port) for role, port in ports.as_dict().items()}
    checks["etcd_client"] = (config.host, ports.etcd_client)
    checks["etcd_peer"] = (config.host, ports.etcd_peer)

    return ServerSpec(
        name=NAME,
        command=(str(bin_dir / "milvus"), "run", "standalone"),
        env=env,
        cwd=milvus_dir,
        log_path=config.logs_dir / f"{NAME}.log",
        ports=ports.as_dict(),
        port_checks=checks,
        probe=lambda: milvus_is_ready(config.host, ports, token),
        ready_timeout_s=ready_timeout_s,
    )
