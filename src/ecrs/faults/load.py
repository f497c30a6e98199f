"""Closed-loop request load on ``recommend_ensemble`` with every outcome recorded.

Each of ``concurrency`` threads sends one request, waits for its response or
error, and sends the next, as a page server calling the recommender would.
Requests mix known users (their ``USER_ID``) and new users (raw
``USER_FEATURES``). Every request's start time, latency and Triton status
code are kept, so that a report can count errors and latency per second and
tell which errors fell inside a fault window.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ecrs.client.client import channel_args

MODEL = "recommend_ensemble"
OUTPUTS = ("ITEM_IDS", "SCORES")
OK = "OK"
# Seconds a client waits for a response (its gRPC deadline).
CLIENT_TIMEOUT_S = 10.0
# Seconds a worker waits before its next request after an error, so that an
# outage does not turn the load into a tight loop of refused connections.
ERROR_BACKOFF_S = 0.05


@dataclass(frozen=True)
class Outcome:
    """One request: when it started (seconds after the load's origin), how
    long it took, its status (``OK`` or a gRPC status name such as
    ``UNAVAILABLE``) and the error message."""

    started_s: float
    latency_s: float
    status: str
    message: str = ""
    new_user: bool = False


@dataclass(frozen=True, kw_only=True)
class LoadSettings:
    """The request mix: ``new_user_share`` of requests (0 to 1) come from new
    users, and each requests ``top_n`` items."""

    concurrency: int = 8
    new_user_share: float = 0.2
    top_n: int = 10
    client_timeout_s: float = CLIENT_TIMEOUT_S
    seed: int = 0


class LoadGenerator:
    """Send requests from worker threads until ``stop``; keep every outcome."""

    def __init__(
        self,
        url: str,
        user_ids: Sequence[str],
        new_user_profiles: Sequence[Mapping[str, Any]],
        settings: LoadSettings = LoadSettings(),
    ) -> None:
        self.url = url
        self.user_ids = list(user_ids)
        self.new_user_profiles = list(new_user_profiles)
        self.settings = settings
        self.origin = time.monotonic()
        self._outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []

    def now(self) -> float:
        """Return the seconds since the load's origin, the time axis of outcomes."""
        return time.monotonic() - self.origin

    def start(self) -> None:
        for worker in range(self.settings.concurrency):
            thread = threading.Thread(
                target=self._work,
                args=(random.Random(self.settings.seed * 1000 + worker),),
                name=f"ecrs-load-{worker}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the workers; each finishes the request it is waiting for."""
        self._stopped.set()
        for thread in self._threads:
            thread.join(timeout=self.settings.client_timeout_s + 5)
        self._threads.clear()

    def outcomes(self, since_s: float = 0.0) -> list[Outcome]:
        """Return the outcomes of requests started at or after ``since_s``."""
        with self._lock:
            return [item for item in self._outcomes if item.started_s >= since_s]

    def _work(self, rng: random.Random) -> None:
        with grpcclient.InferenceServerClient(
            self.url, channel_args=channel_args()
        ) as client:
            while not self._stopped.is_set():
                outcome = self.send_one(client, rng)
                with self._lock:
                    self._outcomes.append(outcome)
                if outcome.status != OK:
                    time.sleep(ERROR_BACKOFF_S)

    def send_one(
        self, client: grpcclient.InferenceServerClient, rng: random.Random
    ) -> Outcome:
        """Send one request of the mix on ``client`` and return its outcome."""
        new_user = rng.random() < self.settings.new_user_share
        if new_user:
            profile = rng.choice(self.new_user_profiles)
            inputs = [bytes_input("USER_FEATURES", json.dumps(dict(profile)).encode())]
        else:
            inputs = [bytes_input("USER_ID", rng.choice(self.user_ids).encode())]
        inputs.append(int32_input("TOP_N", self.settings.top_n))
        started = time.monotonic()
        status, message = OK, ""
        try:
            client.infer(
                MODEL,
                inputs,
                outputs=[grpcclient.InferRequestedOutput(name) for name in OUTPUTS],
                client_timeout=self.settings.client_timeout_s,
                request_id=uuid.uuid4().hex,
            )
        except InferenceServerException as exc:
            status, message = status_name(exc), exc.message() or str(exc)
        return Outcome(
            started - self.origin, time.monotonic() - started, status, message, new_user
        )


def probe_deadline(
    url: str, user_id: str, deadline_s: float, duration_s: float
) -> list[Outcome]:
    """Send requests for ``user_id`` one after another for ``duration_s``,
    each with a client deadline of ``deadline_s``; return their outcomes."""
    settings = LoadSettings(concurrency=1, new_user_share=0.0, client_timeout_s=deadline_s)
    probe = LoadGenerator(url, [user_id], [], settings)
    outcomes = []
    rng = random.Random(0)
    with grpcclient.InferenceServerClient(url, channel_args=channel_args()) as client:
        while probe.now() < duration_s:
            outcomes.append(probe.send_one(client, rng))
    return outcomes


def status_name(exc: InferenceServerException) -> str:
    """Return the gRPC status name of a tritonclient error, such as ``UNAVAILABLE``.

    tritonclient reports it as ``StatusCode.UNAVAILABLE``; an error raised on
    the client side without a status counts as ``UNKNOWN``.
    """
    status = str(exc.status() or "UNKNOWN")
    return status.rsplit(".", 1)[-1]


def bytes_input(name: str, value: bytes) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([value], dtype=np.object_))
    return tensor


def int32_input(name: str, value: int) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1], "INT32")
    tensor.set_data_from_numpy(np.array([value], dtype=np.int32))
    return tensor
