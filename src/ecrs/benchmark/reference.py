"""The reference pipeline: the request path in one Python process, without Triton.

It runs ``RecommendModel``, the same handler that ``recommend_ensemble``
runs, with onnxruntime sessions of the same ONNX files in place of the BLS
calls, against the same Redis and Milvus. It reads the same requests as
perf_analyzer and measures the same way: a closed loop in which each of
``concurrency`` threads sends its next request as soon as the last one
returns.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import json_format

from ecrs.benchmark.measures import LatencySummary, summarize_latencies
from ecrs.config import StoreConfig
from ecrs.export.repository import read_config
from ecrs.serving.layout import CONFIG_FILE, RECOMMEND
from ecrs.serving.onnx_models import OnnxModels
from ecrs.serving.stages import STAGES
from ecrs.serving.triton_model import ModelParameters, RecommendModel, model_parameters

# Requests sent before measuring, so that connections are open and caches warm.
WARMUP_REQUESTS = 50

Inputs = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class ReferenceResult:
    """One closed-loop run: latencies and the seconds of each stage per request."""

    concurrency: int
    latency: LatencySummary
    stages: dict[str, list[float]]


class ReferencePipeline:
    """``RecommendModel`` with onnxruntime models, opened on a served repository.

    Its parameters (candidates, the item cache) are those of the repository's
    recommend_ensemble configuration unless ``parameters`` is given.
    """

    def __init__(
        self,
        repository: Path,
        stores: StoreConfig,
        parameters: ModelParameters | None = None,
    ) -> None:
        self.repository = Path(repository)
        self.models = OnnxModels(self.repository, threads=1)
        self._models = {self.models.version: self.models}
        self.model = RecommendModel(
            model_folder=self.repository / RECOMMEND,
            parameters=parameters or served_parameters(self.repository),
            stores=stores,
            user_tower=lambda version: self.version_models(version).user_tower,
            ranker=lambda version: self.version_models(version).rank,
            item_tower=lambda version: self.version_models(version).item_tower,
        )

    def version_models(self, version: int) -> OnnxModels:
        """Return the onnxruntime sessions of ``version``, opened once."""
        if version not in self._models:
            self._models[version] = OnnxModels(self.repository, version, threads=1)
        return self._models[version]

    def run(
        self, requests: Sequence[Inputs], concurrency: int, seconds: float
    ) -> ReferenceResult:
        """Send ``requests`` in a loop from ``concurrency`` threads for ``seconds``."""
        for inputs in itertools.islice(itertools.cycle(requests), WARMUP_REQUESTS):
            self.model.recommend_outputs(inputs)
        latencies: list[float] = []
        stages: dict[str, list[float]] = {stage: [] for stage in STAGES}
        lock = threading.Lock()
        source = itertools.cycle(requests)
        deadline = time.perf_counter() + seconds

        def worker() -> None:
            while True:
                with lock:
                    inputs = next(source)
                started = time.perf_counter()
                if started >= deadline:
                    return
                self.model.recommend_outputs(inputs)
                elapsed = time.perf_counter() - started
                times = self.model.timer.last()
                with lock:
                    latencies.append(elapsed)
                    for stage in STAGES:
                        stages[stage].append(times.get(stage, 0.0))

        started = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        return ReferenceResult(
            concurrency, summarize_latencies(latencies, wall), stages
        )

    def close(self) -> None:
        self.model.close()


def served_parameters(repository: Path) -> ModelParameters:
    """Read the parameters of recommend_ensemble's config.pbtxt in ``repository``."""
    config = read_config(repository / RECOMMEND / CONFIG_FILE)
    return model_parameters(json_format.MessageToDict(config, preserving_proto_field_name=True))
