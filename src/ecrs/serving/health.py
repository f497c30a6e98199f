"""Reachability of the stores a served model needs.

``StoreHealth`` runs one probe per store (a Redis PING, a Milvus lookup of
the served collection) on a background thread, so that a readiness check
returns at once from the last result instead of waiting on a store timeout.
Its ``ready()`` feeds the served models' ``is_model_ready``, and each change
is reported to a listener (the adapter's store-up gauge and its log).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ecrs.errors import EcrsError

# Seconds between probe rounds: how soon readiness follows a store going down
# or coming back, on top of the probe's own store timeout.
PROBE_INTERVAL_S = 1.0

# The gauge of Triton's metrics endpoint that shows, per served model and
# store, 1 while the store responds to its probe and 0 while it does not.
STORE_UP_METRIC = "ecrs_store_up"

# Seconds stop() waits for a probe in progress: more than a Milvus lookup's
# deadline (twice the 2 s store timeout) and a Redis PING's timeout together.
STOP_TIMEOUT_S = 15.0

# A probe returns when its store serves requests and raises otherwise.
Probe = Callable[[], None]


@dataclass(frozen=True)
class StoreState:
    """One probe result: whether the store serves requests, and why not."""

    store: str
    up: bool
    error: str = ""


# Called with each state whose store went down or came back since its last probe.
Listener = Callable[[StoreState], None]


class StoreHealth:
    """Probe each store in the background and keep the latest states."""

    def __init__(
        self,
        probes: Mapping[str, Probe],
        *,
        listener: Listener | None = None,
        interval_s: float = PROBE_INTERVAL_S,
    ) -> None:
        self._probes = dict(probes)
        self._listener = listener
        self._interval_s = interval_s
        # Stores count as up until a probe fails, so that a model
        # whose stores responded at load time is not reported down meanwhile.
        self._states = {name: StoreState(name, True) for name in self._probes}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Probe once now, then every interval on a daemon thread."""
        self.probe_all()
        self._thread = threading.Thread(
            target=self._run, name="ecrs-store-health", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop probing; wait for a probe in progress, which its store timeout bounds."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT_S)

    def ready(self) -> bool:
        """Return whether every store responded to its latest probe."""
        with self._lock:
            return all(state.up for state in self._states.values())

    def down(self) -> list[StoreState]:
        """Return the states of the stores whose latest probe failed."""
        with self._lock:
            return [state for state in self._states.values() if not state.up]

    def states(self) -> list[StoreState]:
        with self._lock:
            return list(self._states.values())

    def probe_all(self) -> list[StoreState]:
        """Probe every store once; report each store that went down or came back."""
        results = [self._probe(name, probe) for name, probe in self._probes.items()]
        for state in results:
            with self._lock:
                changed = self._states[state.store].up != state.up
                self._states[state.store] = state
            if changed and self._listener is not None:
                self._listener(state)
        return results

    def _probe(self, name: str, probe: Probe) -> StoreState:
        try:
            probe()
        except EcrsError as exc:
            return StoreState(name, False, str(exc))
        except Exception as exc:  # an unexpected failure still means not ready
            return StoreState(name, False, repr(exc))
        return StoreState(name, True)

    def _run(self) -> None:
        while not self._stopped.wait(self._interval_s):
            self.probe_all()
