"""Find, reuse and report on the stack that runs from a state folder."""

from __future__ import annotations

import logging
from pathlib import Path

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ecrs.config import Ports, StackConfig, StoreConfig
from ecrs.errors import StackError, UnavailableError
from ecrs.serving.layout import ONNX_MODELS, PYTHON_MODELS
from ecrs.serving.model_configs import set_live_versions
from ecrs.serving.versions import PointerStore, ServingPointer
from ecrs.stack.launcher import SERVICES, ServerStatus, stack_status, start_stack
from ecrs.stack.runfile import run_file

logger = logging.getLogger(__name__)


def running_config(state_dir: Path) -> StackConfig:
    """Return the settings of the stack running from ``state_dir``.

    Raises ``StackError`` when a server of the stack is not running.
    """
    servers = {status.name: status for status in stack_status(state_dir)}
    missing = [
        name for name in SERVICES if name not in servers or not servers[name].running
    ]
    if missing:
        raise StackError(
            f"{', '.join(missing)} not running from {state_dir}; "
            f"start the stack with: ecrs --state-dir {state_dir} stack start"
        )
    triton = servers["triton"]
    ports = Ports(
        redis=servers["redis"].ports["redis"],
        milvus=servers["milvus"].ports["proxy"],
        triton_grpc=triton.ports["grpc"],
        triton_http=triton.ports["http"],
        triton_metrics=triton.ports["metrics"],
    )
    return StackConfig(state_dir=Path(state_dir), host=triton.host, ports=ports)


def ensure_running(config: StackConfig) -> StackConfig:
    """Start the servers that are not running yet; return the running settings."""
    start_stack(config)
    return running_config(config.state_dir)


def reload_models(config: StackConfig) -> None:
    """Load every model of the local stack's Triton again (see ``reload_triton``)."""
    reload_triton(config.triton_grpc_url, log_hint=f"see {config.logs_dir / 'triton.log'}")


def reload_triton(triton_url: str, *, log_hint: str = "see Triton's log") -> None:
    """Load every model again through the repository API of Triton at
    ``triton_url`` (gRPC, host:port).

    Explicit model control loads a model's newest version and re-runs the
    Python models' ``initialize``, so a running server picks up a new export.
    The ONNX models load first because recommend_ensemble calls them.
    """
    with grpcclient.InferenceServerClient(triton_url) as client:
        for model in (*ONNX_MODELS, *PYTHON_MODELS):
            try:
                client.load_model(model)
            except InferenceServerException as exc:
                raise UnavailableError(
                    f"Triton at {triton_url} failed to load {model}: "
                    f"{exc.message()}; {log_hint}",
                    service="triton",
                ) from exc
    logger.info("reloaded %s", ", ".join((*ONNX_MODELS, *PYTHON_MODELS)))


def serve_version(
    triton_url: str | None,
    repository: Path,
    stores: StoreConfig,
    version: int,
    *,
    log_hint: str = "see Triton's log",
) -> None:
    """Serve ``version`` alone: list it in the served configs, reload Triton at
    ``triton_url`` (when given), then point the serving pointer at it.

    Requests that arrive during the reload may fail; ``ecrs rollout``
    switches versions without failed requests.
    """
    set_live_versions(repository, [version])
    if triton_url is not None:
        reload_triton(triton_url, log_hint=log_hint)
    pointers = PointerStore(stores)
    try:
        old = pointers.read()
        previous = old.version if old is not None and old.version != version else None
        pointers.write(ServingPointer(version, previous=previous))
    finally:
        pointers.close()


def format_status(state_dir: Path) -> str:
    """Describe each recorded server: running or not, where, and its log.

    Stacks that commands build in sub-folders of the state folder (the fault
    suite's in ``faults``, the benchmark's in ``benchmark/items-<n>/stack``)
    follow, when any of their servers runs.
    """
    statuses = stack_status(state_dir)
    lines = [server_line(status) for status in statuses]
    if not lines:
        lines.append(f"no servers recorded in {state_dir}")
    for folder in nested_stacks(state_dir):
        try:
            running = [status for status in stack_status(folder) if status.running]
        except StackError as exc:
            lines += ["", f"stack in {folder}: {exc}"]
            continue
        if running:
            lines += [
                "",
                (
                    f"stack in {folder} (stop it with "
                    f"'ecrs --state-dir {folder} stack stop'):"
                ),
            ]
            lines += [server_line(status) for status in running]
    return "\n".join(lines)


def server_line(status: ServerStatus) -> str:
    state = "running" if status.running else "not running"
    ports = ", ".join(f"{role} {port}" for role, port in status.ports.items())
    return (
        f"{status.name:<7} {state:<11} pid {status.pid:<8} {status.host} ({ports})"
        f"  log {status.log_path}"
    )


def nested_stacks(state_dir: Path, depth: int = 3) -> list[Path]:
    """Return the folders below ``state_dir``, ``depth`` levels at most, that
    have a run file of their own."""
    found = []
    level = [Path(state_dir)]
    for _ in range(depth):
        level = [child for folder in level for child in sub_folders(folder)]
        found += [folder for folder in level if run_file(folder).is_file()]
    return found


def sub_folders(folder: Path) -> list[Path]:
    """Return the folders in ``folder``; none when it cannot be read."""
    try:
        return sorted(child for child in folder.iterdir() if child.is_dir())
    except OSError:
        return []
