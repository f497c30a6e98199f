"""Run the serving benchmark: per catalogue size, Triton against the reference.

For each size the benchmark builds (or reuses) a catalogue, starts a private
stack and loads it, chooses the vector index by measurement, and then
measures ``recommend_ensemble`` with perf_analyzer over gRPC and the
reference pipeline in this process, at every concurrency, with the same
requests. Triton's stage histograms are scraped around each perf_analyzer
run. Memory is read from ``/proc`` and from Redis.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ecrs.benchmark import ann, levers, metrics
from ecrs.benchmark.catalogue import CatalogueSpec, build_catalogue
from ecrs.benchmark.inputs import as_arrays, build_requests, write_input_data
from ecrs.benchmark.measures import stage_summary
from ecrs.benchmark.perf import PerfSettings, run_perf_analyzer
from ecrs.benchmark.reference import ReferencePipeline
from ecrs.benchmark.stack import ServingStack, server_rss_bytes, serving_stack
from ecrs.client.client import RecommendClient
from ecrs.config import StackConfig
from ecrs.errors import UnavailableError
from ecrs.serving.layout import DEEPFM_RANK, RECOMMEND, USER_TOWER
from ecrs.serving.recommender import USER_FEATURES_INPUT, USER_ID_INPUT
from ecrs.stack.machine import describe_machine
from ecrs.stores.feature_store import ITEM, FeatureStore
from ecrs.stores.vector_store import VectorStore
from ecrs.training.data import entity_records

logger = logging.getLogger(__name__)

# Item keys whose Redis memory is sampled (MEMORY USAGE) per catalogue.
REDIS_SAMPLE_KEYS = 1000
WARMUP_REQUESTS = 50
# Seconds the warm-up waits for serving to pass its store probes again.
SERVING_WAIT_S = 60.0


@dataclass(frozen=True, kw_only=True)
class BenchmarkSettings:
    """The sizes (item counts), concurrencies and measurement lengths of a run."""

    sizes: tuple[int, ...]
    work_dir: Path
    concurrencies: tuple[int, ...] = (1, 2, 4, 8, 16)
    users: int = 10_000
    interactions: int = 100_000
    dim: int = 64
    requests: int = 1000
    new_user_share: float = 0.1
    top_n: int = 10
    candidates: int = 200
    perf: PerfSettings = PerfSettings()
    reference_seconds: float = 5.0
    ann_queries: int = 200
    seed: int = 0
    # Measure each lever of ``ecrs.benchmark.levers`` at these concurrencies,
    # on the sizes listed in ``lever_sizes``.
    lever_concurrencies: tuple[int, ...] = (1, 8)
    lever_sizes: tuple[int, ...] = ()


@dataclass
class SizeResult:
    """Every figure measured on one catalogue size."""

    items: int
    setup: dict[str, Any] = field(default_factory=dict)
    index: dict[str, Any] = field(default_factory=dict)
    triton: list[dict[str, Any]] = field(default_factory=list)
    reference: list[dict[str, Any]] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)
    levers: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "setup": self.setup,
            "index": self.index,
            "triton": self.triton,
            "reference": self.reference,
            "memory": self.memory,
            "levers": self.levers,
        }


def run_benchmark(
    settings: BenchmarkSettings,
    on_size: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Measure every size; return the figures as one JSON-ready mapping.

    ``on_size`` gets the figures so far after each size, so that a caller can
    keep them when a later, larger size fails.
    """
    run: dict[str, Any] = {
        "settings": settings_dict(settings),
        "machine": describe_machine(),
        "sizes": [],
    }
    for items in settings.sizes:
        run["sizes"].append(run_size(settings, items).to_dict())
        if on_size is not None:
            on_size(run)
    return run


def run_size(settings: BenchmarkSettings, items: int) -> SizeResult:
    result = SizeResult(items)
    folder = settings.work_dir / f"items-{items}"
    spec = CatalogueSpec(
        items=items,
        users=settings.users,
        interactions=settings.interactions,
        dim=settings.dim,
        seed=settings.seed,
    )
    catalogue = build_catalogue(spec, folder / "catalogue")
    result.setup["catalogue_seconds"] = catalogue.build_seconds
    requests = build_requests(
        catalogue.dataset,
        count=settings.requests,
        new_user_share=settings.new_user_share,
        top_n=settings.top_n,
        seed=settings.seed,
    )
    input_data = write_input_data(requests, folder / "input-data.json")
    arrays = [as_arrays(request) for request in requests]
    with serving_stack(catalogue, folder / "stack") as stack:
        result.setup["load_seconds"] = stack.load.seconds
        result.setup["collection"] = stack.load.collection
        reference = ReferencePipeline(stack.config.model_repository, stack.config.stores)
        try:
            result.index = study_index(settings, stack, catalogue.dataset, reference, requests)
            result.memory = measure_memory(stack, catalogue.dataset.schema.name, items)
            warm_up(stack.config, requests)
            result.triton = [
                measure_triton(stack.config, input_data, concurrency, settings, folder)
                for concurrency in settings.concurrencies
            ]
            result.reference = [
                measure_reference(reference, arrays, concurrency, settings)
                for concurrency in settings.concurrencies
            ]
            if items in settings.lever_sizes:
                result.levers = measure_levers(
                    stack.config, input_data, requests, settings, folder
                )
        finally:
            reference.close()
        result.memory["rss_after_bytes"] = server_rss_bytes(stack.config.state_dir)
    return result


def study_index(
    settings: BenchmarkSettings,
    stack: ServingStack,
    dataset,
    reference: ReferencePipeline,
    requests: list[dict[str, Any]],
) -> dict[str, Any]:
    """Measure the candidate indexes; leave the chosen one built."""
    models = reference.models
    item_ids, records = entity_records(dataset.items, dataset.schema.items.id)
    item_ids = [str(item_id) for item_id in item_ids]
    item_vectors = models.item_tower(models.encoder.encode_items(item_ids, records))
    queries = user_vectors(reference, requests[: settings.ann_queries])
    vectors = VectorStore(stack.config.stores)
    try:
        study = ann.study_indexes(
            vectors,
            stack.load.collection,
            item_ids,
            item_vectors,
            queries,
            settings.candidates,
        )
    finally:
        vectors.close()
    return study.to_dict()


def user_vectors(reference: ReferencePipeline, requests: list[dict[str, Any]]) -> np.ndarray:
    """Run the user tower for the users of ``requests``, as serving would."""
    recommender = reference.model.served(reference.models.version).recommender
    rows = []
    for request in requests:
        features = request.get(USER_FEATURES_INPUT)
        user = recommender.user(
            user_id=request.get(USER_ID_INPUT),
            user_features=None if features is None else json.loads(features),
        )
        rows.append(user.row)
    return reference.models.user_tower(np.concatenate(rows))


def measure_memory(stack: ServingStack, namespace: str, items: int) -> dict[str, Any]:
    """Return each server's resident memory and the stores' bytes per item.

    Redis's figure is the mean ``MEMORY USAGE`` of sampled item keys (key,
    value and Redis's per-key overhead). Milvus's is the growth of its
    resident memory from the empty server to the loaded, indexed collection,
    over the item count, so it includes the index and Milvus's caches.
    """
    rss = server_rss_bytes(stack.config.state_dir)
    features = FeatureStore(stack.config.stores, namespace)
    try:
        keys = [
            key
            for _, key in zip(
                range(REDIS_SAMPLE_KEYS),
                features.client.scan_iter(features.key(ITEM, "*"), count=1000),
            )
        ]
        usages = [features.client.memory_usage(key, samples=0) or 0 for key in keys]
        redis_used = int(features.client.info("memory")["used_memory"])
    finally:
        features.client.close()
    milvus_growth = rss.get("milvus", 0) - stack.idle_rss_bytes.get("milvus", 0)
    return {
        "rss_idle_bytes": stack.idle_rss_bytes,
        "rss_loaded_bytes": rss,
        "redis_used_memory_bytes": redis_used,
        "redis_bytes_per_item": float(np.mean(usages)) if usages else 0.0,
        "milvus_bytes_per_item": milvus_growth / items,
    }


def warm_up(config: StackConfig, requests: list[dict[str, Any]]) -> None:
    """Send a few requests, so that every connection is open before measuring.

    The index study released and reloaded the collection, and each served
    model instance fails requests at once until its own next Milvus probe
    finds the collection loaded, so a request is retried while UNAVAILABLE.
    """
    deadline = time.monotonic() + SERVING_WAIT_S
    with RecommendClient(config.triton_grpc_url) as client:
        for request in requests[:WARMUP_REQUESTS]:
            while True:
                try:
                    send_request(client, request)
                    break
                except UnavailableError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)


def send_request(client: RecommendClient, request: dict[str, Any]) -> None:
    features = request.get(USER_FEATURES_INPUT)
    client.recommend(
        user_id=request.get(USER_ID_INPUT),
        user_features=None if features is None else json.loads(features),
        top_n=request.get("TOP_N"),
    )


def measure_triton(
    config: StackConfig,
    input_data: Path,
    concurrency: int,
    settings: BenchmarkSettings,
    folder: Path,
) -> dict[str, Any]:
    """Run perf_analyzer at one concurrency; add the stages scraped around it."""
    metrics_url = f"http://{config.host}:{config.ports.triton_metrics}/metrics"
    before = metrics.scrape(metrics_url)
    perf = run_perf_analyzer(
        model=RECOMMEND,
        url=config.triton_grpc_url,
        input_data=input_data,
        concurrency=concurrency,
        work_dir=folder,
        settings=settings.perf,
    )
    samples = metrics.difference(metrics.scrape(metrics_url), before)
    figures = metrics.stage_figures(samples, RECOMMEND)
    shares = metrics.stage_shares(figures)
    logger.info(
        "Triton, concurrency %d: %.0f requests/s, p50 %.2f ms, p99 %.2f ms",
        concurrency,
        perf.latency.throughput,
        perf.latency.p50_ms,
        perf.latency.p99_ms,
    )
    return {
        "concurrency": concurrency,
        **perf.latency.to_dict(),
        "stable": perf.stable,
        "server_us": perf.server_us,
        "stages": {
            stage: {
                "p50_ms": figure.p50_ms,
                "mean_ms": figure.mean_ms,
                "share": shares.get(stage, 0.0),
                "count": figure.count,
            }
            for stage, figure in figures.items()
        },
        "models": {
            model: metrics.model_compute_ms(samples, model)
            for model in (USER_TOWER, DEEPFM_RANK)
        },
    }


def measure_levers(
    config: StackConfig,
    input_data: Path,
    requests: list[dict[str, Any]],
    settings: BenchmarkSettings,
    folder: Path,
) -> list[dict[str, Any]]:
    """Measure the served configuration, then each lever alone."""

    def sweep() -> list[dict[str, Any]]:
        return [
            _lever_figures(measure_triton(config, input_data, c, settings, folder))
            for c in settings.lever_concurrencies
        ]

    rows = [{"lever": "served configuration", "results": sweep()}]
    for lever in levers.LEVERS:
        with levers.applied(config.triton_grpc_url, lever):
            warm_up(config, requests)
            rows.append({"lever": lever.name, "results": sweep()})
    return rows


def _lever_figures(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("concurrency", "throughput", "p50_ms", "p90_ms", "p99_ms")
    return {name: row[name] for name in keep}


def measure_reference(
    reference: ReferencePipeline,
    arrays: list[dict[str, np.ndarray]],
    concurrency: int,
    settings: BenchmarkSettings,
) -> dict[str, Any]:
    result = reference.run(arrays, concurrency, settings.reference_seconds)
    logger.info(
        "reference, concurrency %d: %.0f requests/s, p50 %.2f ms, p99 %.2f ms",
        concurrency,
        result.latency.throughput,
        result.latency.p50_ms,
        result.latency.p99_ms,
    )
    return {
        "concurrency": concurrency,
        **result.latency.to_dict(),
        "stages": stage_summary(result.stages),
    }


def settings_dict(settings: BenchmarkSettings) -> dict[str, Any]:
    return {
        "sizes": list(settings.sizes),
        "concurrencies": list(settings.concurrencies),
        "users": settings.users,
        "interactions": settings.interactions,
        "dim": settings.dim,
        "requests": settings.requests,
        "new_user_share": settings.new_user_share,
        "top_n": settings.top_n,
        "candidates": settings.candidates,
        "measurement_ms": settings.perf.measurement_ms,
        "stability_percent": settings.perf.stability_percent,
        "reference_seconds": settings.reference_seconds,
        "ann_queries": settings.ann_queries,
        "seed": settings.seed,
    }
