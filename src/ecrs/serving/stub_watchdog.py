"""Reload a Triton model whose Python backend stub process died.

Triton 2.51 (24.10) does not start a new stub when one exits (a crash, an
out-of-memory kill, ``kill -9``): the model stays READY, and every request
routed to the dead instance fails with "Stub process ... is not healthy"
after a wait of about 8 s, until the model is loaded again. Measured on the
local stack: no recovery within 30 s of killing the ``deepfm_rank`` stub.

``StubWatchdog`` counts the live stubs of each READY model among
tritonserver's child processes once a second, and reloads a model whose
count stays below its instance count for ``MISSING_CHECKS`` checks in a row.
The reload passes the model's own configuration as an override, with the
parameter ``RELOAD_PARAMETER`` set to the time of the reload. Triton skips a
load whose configuration did not change (measured: a second reload with the
same override left the dead stub in place). The new instances start before
the old ones are finalized. Every served Python model instance starts a
watchdog, and an abstract Unix socket named after tritonserver's pid lets
one of them run at a time; the kernel releases the name when its stub dies.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ecrs.client.client import channel_args

logger = logging.getLogger(__name__)

STUB_NAME = "triton_python_backend_stub"
CHECK_INTERVAL_S = 1.0
# Checks in a row that must find a stub missing before the model reloads, so
# that the moment between a stub's exit and its replacement during an
# ordinary reload is not mistaken for a crash.
MISSING_CHECKS = 2
# Seconds after a reload during which the model is not reloaded again.
RELOAD_COOLDOWN_S = 30.0
# The address of tritonserver's own gRPC endpoint; the local stack sets it.
TRITON_URL_ENV = "ECRS_TRITON_GRPC_URL"
# A config.pbtxt parameter that no model reads; its value marks each reload.
RELOAD_PARAMETER = "ecrs_stub_watchdog_reload"
DEFAULT_TRITON_URL = "127.0.0.1:8001"


def stub_model(model_path: str) -> str:
    """Return the model name in a stub's first argument, the path of the
    model version's file: ``<repository>/<model>/<version>/model.py``, or
    ``model.onnx`` for the ONNX models."""
    parts = Path(model_path).parts
    if len(parts) >= 3 and parts[-2].isdigit():
        return parts[-3]
    return model_path


def live_stubs(server_pid: int, proc: Path = Path("/proc")) -> Counter[str]:
    """Count the live stub processes of each model among ``server_pid``'s children."""
    counts: Counter[str] = Counter()
    for stat_path in proc.glob("[0-9]*/stat"):
        try:
            fields = stat_path.read_text().rsplit(")", 1)[1].split()
            argv = (stat_path.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        state, parent = fields[0], int(fields[1])
        if parent != server_pid or state in ("Z", "X") or len(argv) < 2:
            continue
        if argv[0].decode(errors="replace").endswith(STUB_NAME):
            counts[stub_model(argv[1].decode(errors="replace"))] += 1
    return counts


def expected_stubs(
    client: grpcclient.InferenceServerClient,
) -> dict[str, tuple[int, dict]]:
    """Return each READY model's stub count (instances times READY versions)
    and its configuration, from Triton's repository index."""
    versions = Counter(
        entry["name"]
        for entry in client.get_model_repository_index(as_json=True).get("models", [])
        if entry.get("state") == "READY"
    )
    expected = {}
    for name, ready_versions in versions.items():
        config = client.get_model_config(name, as_json=True)["config"]
        if config.get("backend") not in ("python", "onnxruntime"):
            continue  # Only Python-based backends run stubs.
        instances = sum(
            int(group.get("count", 1)) for group in config.get("instance_group", [])
        )
        expected[name] = (max(1, instances) * ready_versions, config)
    return expected


class StubWatchdog:
    """Reload models whose stub processes died; one watchdog runs per server."""

    def __init__(
        self,
        server_pid: int,
        url: str,
        *,
        count_stubs: Callable[[int], Counter[str]] = live_stubs,
        interval_s: float = CHECK_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        log_info: Callable[[str], None] = logger.info,
        log_warn: Callable[[str], None] = logger.warning,
    ) -> None:
        self.server_pid = server_pid
        self.url = url
        self.count_stubs = count_stubs
        self.interval_s = interval_s
        self._clock = clock
        self._log_info = log_info
        self._log_warn = log_warn
        self._missing: Counter[str] = Counter()
        self._reloaded_at: dict[str, float] = {}
        self._stopped = threading.Event()
        self._lock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="ecrs-stub-watchdog", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop checking without waiting: a reload in progress may be the
        one that finalizes this model, and it returns only after that."""
        self._stopped.set()

    def check(self, client: grpcclient.InferenceServerClient) -> list[str]:
        """Compare live and expected stubs once; reload models missing stubs
        for ``MISSING_CHECKS`` checks; return the models reloaded."""
        live = self.count_stubs(self.server_pid)
        reloaded = []
        for name, (expected, config) in expected_stubs(client).items():
            if live[name] >= expected:
                self._missing.pop(name, None)
                continue
            self._missing[name] += 1
            cooling = self._clock() - self._reloaded_at.get(name, float("-inf"))
            if self._missing[name] < MISSING_CHECKS or cooling < RELOAD_COOLDOWN_S:
                continue
            self._log_warn(
                f"model {name} has {live[name]} of {expected} stub processes; "
                "a stub died, reloading the model"
            )
            client.load_model(name, config=json.dumps(self._marked(config)))
            self._log_info(f"reloaded {name} after its stub died")
            self._reloaded_at[name] = self._clock()
            self._missing.pop(name, None)
            reloaded.append(name)
        return reloaded

    def _marked(self, config: dict) -> dict:
        parameters = {
            **config.get("parameters", {}),
            RELOAD_PARAMETER: {"string_value": f"{self._clock():.6f}"},
        }
        return {**config, "parameters": parameters}

    def _run(self) -> None:
        failures = 0
        client = None
        while not self._stopped.wait(self.interval_s):
            if not self._hold_lock():
                continue
            try:
                client = client or grpcclient.InferenceServerClient(
                    self.url, channel_args=channel_args()
                )
                self.check(client)
                failures = 0
            except (InferenceServerException, OSError) as exc:
                failures += 1
                # Logged on the first failure and every minute after it.
                if failures % 60 == 1:
                    self._log_warn(f"stub watchdog: Triton at {self.url} failed: {exc}")
        if client is not None:
            client.close()

    def _hold_lock(self) -> bool:
        if self._lock is not None:
            return True
        lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            lock.bind(f"\0ecrs-stub-watchdog-{self.server_pid}")
        except OSError:
            lock.close()
            return False
        self._lock = lock
        self._log_info(
            f"stub watchdog of tritonserver pid {self.server_pid} runs in pid "
            f"{os.getpid()}"
        )
        return True


def triton_url() -> str:
    return os.environ.get(TRITON_URL_ENV) or DEFAULT_TRITON_URL
