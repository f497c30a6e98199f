"""The Triton Python-backend adapter shared by every served Python model.

Each ``model.py`` under ``model_repository/`` subclasses ``ServedPythonModel``
and names its capability. This class reads the inputs the capability
declares, calls its ``RecommendModel`` handler, and returns the outputs as
tensors. ``user_tower``, ``item_tower`` and ``deepfm_rank`` run through BLS
calls pinned to the version each request uses. ECRS errors become Triton
errors with the matching code. A failed BLS call passes on the called
model's message and its request-error code, or UNAVAILABLE when the model
itself failed. Any other exception becomes INTERNAL and is logged, and the
model keeps serving.

Only a Triton Python-backend stub can import this module, because it imports
``triton_python_backend_utils``.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable

import numpy as np
import triton_python_backend_utils as pb_utils

from ecrs.config import StoreConfig
from ecrs.errors import EcrsError, ModelError, internal_error_message
from ecrs.serving.health import (
    PROBE_INTERVAL_S,
    STORE_UP_METRIC,
    StoreHealth,
    StoreState,
)
from ecrs.serving.layout import DEEPFM_RANK, ITEM_TOWER, USER_TOWER
from ecrs.serving.stage_metrics import StageMetrics
from ecrs.serving.stub_watchdog import StubWatchdog, triton_url
from ecrs.serving.triton_model import CAPABILITIES, RecommendModel, model_parameters


class ServedPythonModel:
    """Base of the ``TritonPythonModel`` classes; subclasses set ``capability``."""

    capability: str = ""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        self.spec = CAPABILITIES[self.capability]
        self.logger = pb_utils.Logger
        self.model = RecommendModel(
            model_folder=args["model_repository"],
            parameters=model_parameters(config),
            stores=StoreConfig.from_env(),
            user_tower=self._user_tower,
            ranker=self._rank,
            item_tower=self._item_tower,
        )
        self.handler = getattr(self.model, self.spec.handler)
        try:
            serving = f"version {self.model.pointer().version}"
        except EcrsError as exc:  # Redis may come up after Triton
            serving = f"unknown until Redis responds ({exc})"
        self.logger.log_info(
            f"{self.capability} follows the serving pointer; it serves {serving}"
        )
        # Every series a stub process creates carries its own label values.
        # Triton 2.51 shares one series between Metric objects with equal
        # labels, so deleting one at an instance's finalize would leave the
        # other dangling. A reload finalizes the old instance after the new
        # one started, so the instance name alone is not enough.
        self.metric_labels = {
            "model": self.capability,
            "instance": f"{args['model_instance_name']}@{os.getpid()}",
        }
        self._closing = False
        self._start_health()
        self.request_metrics = RequestMetrics(self.metric_labels)
        self.stage_metrics = StageMetrics(self.metric_labels)
        self.watchdog = StubWatchdog(
            os.getppid(),
            triton_url(),
            log_info=self.logger.log_info,
            log_warn=self.logger.log_warn,
        )
        self.watchdog.start()

    def execute(self, requests: list) -> list:
        return [self._respond(request) for request in requests]

    def is_model_ready(self) -> bool:
        """Report the model not ready while a store it needs is unreachable.

        Triton calls this for the model's readiness only in releases whose
        Python backend supports a user-defined ``is_model_ready``; 24.10
        (2.51) does not, and there the ``ecrs_store_up`` gauge shows it.
        """
        return self.health.ready()

    def finalize(self) -> None:
        self._closing = True
        self.watchdog.stop()
        self.health.stop()
        # Triton requires each Metric to go before its MetricFamily.
        self._store_up.clear()
        self._store_up_family = None
        self.request_metrics.close()
        self.stage_metrics.close()
        self.model.close()

    def _start_health(self) -> None:
        self._store_up_family = pb_utils.MetricFamily(
            name=STORE_UP_METRIC,
            description="1 while a store the model needs responds, else 0",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        self._store_up = {
            store: self._store_up_family.Metric(
                labels={**self.metric_labels, "store": store}
            )
            for store in self.spec.stores
        }
        self.health = StoreHealth(
            self.model.store_probes(self.spec.stores), listener=self._store_changed
        )
        self.health.start()
        for state in self.health.states():
            self._store_up[state.store].set(1.0 if state.up else 0.0)

    def _store_changed(self, state: StoreState) -> None:
        if self._closing:
            return
        self._store_up[state.store].set(1.0 if state.up else 0.0)
        if state.up:
            self.logger.log_info(f"{self.capability}: {state.store} responds again")
        else:
            self.logger.log_warn(f"{self.capability}: not ready: {state.error}")

    def _respond(self, request):
        started = time.perf_counter()
        self.model.picked_version = None
        response = self._run(request)
        self.request_metrics.record(
            self.model.picked_version,
            not response.has_error(),
            (time.perf_counter() - started) * 1e6,
        )
        return response

    def _run(self, request):
        down = self.health.down()
        if down:
            return self._reject_unavailable(request, down[0])
        inputs = {}
        for name in self.spec.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            inputs[name] = None if tensor is None else tensor.as_numpy()
        request_id = request.request_id() or "-"
        try:
            outputs = self.handler(inputs)
        except EcrsError as exc:
            # Each request error's status is the name of its TritonError code.
            status = exc.status or "INTERNAL"
            self.logger.log_warn(
                f"{self.capability} request {request_id}: {status}: {exc}"
            )
            code = getattr(pb_utils.TritonError, status)
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), code))
        except Exception as exc:  # report, keep serving the other requests
            # The traceback and str(exc) too: some exceptions, such as
            # pymilvus's, keep their message out of repr().
            self.logger.log_error(
                f"{self.capability} request {request_id} failed: {exc!r} ({exc})\n"
                f"{traceback.format_exc()}"
            )
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(
                    internal_error_message(exc, request_id),
                    pb_utils.TritonError.INTERNAL,
                )
            )
        self.stage_metrics.observe(self.model.picked_version, self.model.timer.last())
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(name, value) for name, value in outputs.items()]
        )

    def _reject_unavailable(self, request, state: StoreState):
        """Fail a request at once while a store it needs fails its probes.

        Without this, each request would wait for the store timeout, and the
        requests queued behind it on the model's few instances would wait
        for all of those in turn, past their clients' deadlines.
        """
        message = (
            f"{state.error} (requests fail at once until {state.store}'s next "
            f"probe succeeds; probes run every {PROBE_INTERVAL_S:.0f} s)"
        )
        request_id = request.request_id() or "-"
        self.logger.log_warn(
            f"{self.capability} request {request_id}: UNAVAILABLE: {message}"
        )
        return pb_utils.InferenceResponse(
            error=pb_utils.TritonError(message, pb_utils.TritonError.UNAVAILABLE)
        )

    def _user_tower(self, version: int) -> Callable[[np.ndarray], np.ndarray]:
        def run(rows: np.ndarray) -> np.ndarray:
            feeds = {"USER_FEATURE_IDS": rows}
            return self._bls(USER_TOWER, version, feeds, "USER_EMBEDDING")

        return run

    def _item_tower(self, version: int) -> Callable[[np.ndarray], np.ndarray]:
        def run(rows: np.ndarray) -> np.ndarray:
            feeds = {"ITEM_FEATURE_IDS": rows}
            return self._bls(ITEM_TOWER, version, feeds, "ITEM_EMBEDDING")

        return run

    def _rank(self, version: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        def run(user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
            feeds = {"USER_FEATURE_IDS": user_rows, "ITEM_FEATURE_IDS": item_rows}
            return self._bls(DEEPFM_RANK, version, feeds, "SCORE")[:, 0]

        return run

    def _bls(
        self, model_name: str, version: int, feeds: dict, output_name: str
    ) -> np.ndarray:
        request = pb_utils.InferenceRequest(
            model_name=model_name,
            model_version=version,
            requested_output_names=[output_name],
            inputs=[pb_utils.Tensor(name, value) for name, value in feeds.items()],
        )
        response = request.exec()
        if response.has_error():
            error = response.error()
            raise ModelError(
                f"model {model_name} version {version} failed: "
                f"{error.message()}",
                status=_code_name(error.code()),
            )
        return pb_utils.get_output_tensor_by_name(response, output_name).as_numpy()


class RequestMetrics:
    """Counters per exported version on Triton's metrics endpoint, so that a
    canary's requests, failures and time can be compared with the serving
    version's. ``version="none"`` counts requests rejected before a version
    was picked."""

    NAMES = {
        "ecrs_request_success": "requests answered, by model and exported version",
        "ecrs_request_failure": "requests that failed, by model and exported version",
        "ecrs_request_duration_us": "time spent on requests, in microseconds",
    }

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels
        self._families = {
            name: pb_utils.MetricFamily(
                name=name, description=text, kind=pb_utils.MetricFamily.COUNTER
            )
            for name, text in self.NAMES.items()
        }
        self._metrics: dict[str, dict[str, object]] = {}

    def record(self, version: int | None, succeeded: bool, duration_us: float) -> None:
        label = "none" if version is None else str(version)
        if label not in self._metrics:
            labels = {**self.labels, "version": label}
            self._metrics[label] = {
                name: family.Metric(labels=labels)
                for name, family in self._families.items()
            }
        metrics = self._metrics[label]
        outcome = "ecrs_request_success" if succeeded else "ecrs_request_failure"
        metrics[outcome].increment(1)
        metrics["ecrs_request_duration_us"].increment(duration_us)

    def close(self) -> None:
        # Triton requires each Metric to go before its MetricFamily.
        self._metrics.clear()
        self._families.clear()


def _code_name(code: int) -> str:
    """Name the caller's code for a called model's error code.

    A request error the called model reported (invalid input, not found,
    unsupported, cancelled) keeps its code. Anything else, such as a model
    that is not ready or failed inside, means a dependency is unavailable.
    """
    for name in ("INVALID_ARG", "NOT_FOUND", "UNSUPPORTED", "CANCELLED"):
        if getattr(pb_utils.TritonError, name, None) == code:
            return name
    return "UNAVAILABLE"
