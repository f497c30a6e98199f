"""Choose the Milvus index of a catalogue by measuring recall and latency.

Every candidate index is built on the loaded collection in turn, and each
search configuration runs the same user vectors one at a time. Recall@K is
the share of the exact top K (inner product over every item vector, in
numpy) that the Milvus search returns, averaged over the queries. The chosen
configuration is the fastest by p50 among those with recall@K of at least
``MIN_RECALL``. FLAT, which is exact, is preferred while its p50 is within
``FLAT_MARGIN`` of the fastest. The collection ends with the chosen index.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ecrs.stores.vector_store import (
    Index,
    VectorStore,
    default_search_params,
    ivf_lists,
)

logger = logging.getLogger(__name__)

MIN_RECALL = 0.95
FLAT_MARGIN = 1.10
# Searches before the measured ones, after an index is loaded.
WARMUP_SEARCHES = 20


@dataclass(frozen=True)
class SearchConfig:
    """An index and the search parameters and consistency level to query it with.

    ``served`` marks the configuration that serving would use with this
    index (``default_search_params`` and Bounded consistency). Only those
    can be chosen, and the others show what a different setting would give.
    """

    index: Index
    search_params: dict
    consistency: str = "Bounded"
    served: bool = False

    @property
    def label(self) -> str:
        build = ", ".join(f"{k}={v}" for k, v in self.index.build_params.items())
        search = ", ".join(f"{k}={v}" for k, v in self.search_params.items())
        parts = [part for part in (build, search) if part]
        text = self.index.index_type + (f" ({'; '.join(parts)})" if parts else "")
        return text if self.consistency == "Bounded" else f"{text}, {self.consistency}"


@dataclass(frozen=True)
class SearchMeasurement:
    config: SearchConfig
    recall: float
    p50_ms: float
    p99_ms: float

    def to_dict(self) -> dict:
        return {
            "label": self.config.label,
            "index_type": self.config.index.index_type,
            "build_params": self.config.index.build_params,
            "search_params": self.config.search_params,
            "consistency": self.config.consistency,
            "served": self.config.served,
            "recall": self.recall,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
        }


def candidate_configs(items: int, limit: int) -> list[list[SearchConfig]]:
    """Return the search configurations to measure, grouped by index build."""
    hnsw = Index("HNSW", {"M": 16, "efConstruction": 200}, {})
    nlist = ivf_lists(items)
    ivf = Index("IVF_FLAT", {"nlist": nlist}, {})
    flat = Index("FLAT", {}, {})
    groups = []
    for index, variants in (
        (flat, []),
        (hnsw, [{"ef": 2 * max(256, limit)}]),
        (ivf, [{"nprobe": max(1, nlist // 32)}, {"nprobe": max(1, nlist // 8)}]),
    ):
        served = default_search_params(
            {"index_type": index.index_type, **index.build_params}, limit
        )
        group = [
            SearchConfig(index, served, served=True),
            SearchConfig(index, served, "Eventually"),
        ]
        group += [
            SearchConfig(index, variant) for variant in variants if variant != served
        ]
        groups.append(group)
    return groups


# Inner products this close to the k-th best count as ties with it.
TIE_TOLERANCE = 1e-5


@dataclass(frozen=True)
class ExactTop:
    """A query's exact top k: every item scoring at least the k-th best score.

    Items with equal features have equal vectors, so the k-th best score can
    be shared by more than one item, and any of them is a correct k-th result.
    """

    k: int
    threshold: float
    scores: np.ndarray

    def hits(self, rows: Sequence[int]) -> int:
        """Count the rows that belong to the exact top k, at most k."""
        correct = self.scores[list(rows)] >= self.threshold - TIE_TOLERANCE
        return min(self.k, int(np.count_nonzero(correct)))


def exact_top(items: np.ndarray, queries: np.ndarray, k: int) -> list[ExactTop]:
    """Return each query's exact top ``k`` by inner product over ``items``."""
    tops = []
    for query in queries:
        scores = items @ query
        k = min(k, len(scores))
        threshold = float(np.partition(scores, len(scores) - k)[len(scores) - k])
        tops.append(ExactTop(k, threshold, scores))
    return tops


def measure_config(
    vectors: VectorStore,
    collection: str,
    config: SearchConfig,
    queries: np.ndarray,
    exact: Sequence[ExactTop],
    row_of: dict[str, int],
    limit: int,
) -> SearchMeasurement:
    """Search every query with ``config``; return its recall and latency."""
    client = vectors.client
    params = {"metric_type": "IP", "params": config.search_params}

    def search(query: np.ndarray) -> list[str]:
        hits = client.search(
            collection,
            data=[query.astype(np.float32).tolist()],
            limit=limit,
            search_params=params,
            consistency_level=config.consistency,
        )[0]
        return [hit["id"] for hit in hits]

    for query in queries[:WARMUP_SEARCHES]:
        search(query)
    latencies, recalls = [], []
    for query, truth in zip(queries, exact, strict=True):
        started = time.perf_counter()
        found = search(query)
        latencies.append(time.perf_counter() - started)
        recalls.append(truth.hits([row_of[item_id] for item_id in found]) / truth.k)
    p50, p99 = np.percentile(np.asarray(latencies) * 1000.0, [50, 99])
    return SearchMeasurement(config, float(np.mean(recalls)), float(p50), float(p99))


def choose(measurements: Sequence[SearchMeasurement]) -> SearchMeasurement:
    """Pick the fastest served configuration with enough recall, FLAT first.

    When none reaches ``MIN_RECALL``, the one with the highest recall wins.
    """
    served = [m for m in measurements if m.config.served]
    good = [m for m in served if m.recall >= MIN_RECALL]
    if not good:
        return max(served, key=lambda m: m.recall)
    fastest = min(good, key=lambda m: m.p50_ms)
    flat = [m for m in good if m.config.index.index_type == "FLAT"]
    if flat and flat[0].p50_ms <= fastest.p50_ms * FLAT_MARGIN:
        return flat[0]
    return fastest


def same_index(first: Index, second: Index) -> bool:
    """Return whether two indexes are built alike (search parameters aside)."""
    return (first.index_type, first.build_params) == (
        second.index_type,
        second.build_params,
    )


def rebuild_index(vectors: VectorStore, collection: str, index: Index) -> None:
    """Replace the vector index of ``collection`` and load it again."""
    client = vectors.client
    started = time.perf_counter()
    client.release_collection(collection)
    for name in client.list_indexes(collection):
        client.drop_index(collection, name)
    params = client.prepare_index_params()
    params.add_index(
        field_name="embedding",
        index_type=index.index_type,
        metric_type="IP",
        params=index.build_params,
    )
    client.create_index(collection, params)
    vectors.wait_indexed(collection, timeout_s=3600)
    client.load_collection(collection)
    logger.info(
        "built a %s index on %s in %.1f s",
        index.index_type,
        collection,
        time.perf_counter() - started,
    )


@dataclass(frozen=True)
class IndexStudy:
    """Every configuration measured, the chosen one, and the loader's default."""

    measurements: list[SearchMeasurement]
    chosen: SearchMeasurement
    loaded_index: str
    # The chosen configuration searched the way serving searches
    # (``VectorStore.search``), in milliseconds.
    serving_p50_ms: float
    serving_p99_ms: float

    def to_dict(self) -> dict:
        return {
            "min_recall": MIN_RECALL,
            "loaded_index": self.loaded_index,
            "chosen": self.chosen.to_dict(),
            "measured": [m.to_dict() for m in self.measurements],
            "serving_p50_ms": self.serving_p50_ms,
            "serving_p99_ms": self.serving_p99_ms,
        }


def study_indexes(
    vectors: VectorStore,
    collection: str,
    item_ids: Sequence[str],
    item_vectors: np.ndarray,
    queries: np.ndarray,
    limit: int,
) -> IndexStudy:
    """Measure every candidate configuration and leave the chosen index built.

    The index that loading built is measured first, without rebuilding it.
    """
    loaded = Index.for_size(len(item_ids))
    groups = candidate_configs(len(item_ids), limit)
    groups.sort(key=lambda group: group[0].index.index_type != loaded.index_type)
    exact = exact_top(item_vectors, queries, limit)
    row_of = {item_id: row for row, item_id in enumerate(item_ids)}
    measurements = []
    built = loaded
    for group in groups:
        if not same_index(group[0].index, built):
            rebuild_index(vectors, collection, group[0].index)
            built = group[0].index
        for config in group:
            measurement = measure_config(
                vectors, collection, config, queries, exact, row_of, limit
            )
            logger.info(
                "%s: recall@%d %.3f, p50 %.2f ms",
                config.label,
                limit,
                measurement.recall,
                measurement.p50_ms,
            )
            measurements.append(measurement)
    chosen = choose(measurements)
    if not same_index(chosen.config.index, built):
        rebuild_index(vectors, collection, chosen.config.index)
    serving = measure_serving_search(vectors, collection, queries, limit)
    return IndexStudy(measurements, chosen, loaded.index_type, *serving)


def measure_serving_search(
    vectors: VectorStore, collection: str, queries: np.ndarray, limit: int
) -> tuple[float, float]:
    """Return the p50 and p99 in ms of ``VectorStore.search``, serving's search."""
    for query in queries[:WARMUP_SEARCHES]:
        vectors.search(collection, query, limit)
    latencies = []
    for query in queries:
        started = time.perf_counter()
        vectors.search(collection, query, limit)
        latencies.append(time.perf_counter() - started)
    p50, p99 = np.percentile(np.asarray(latencies) * 1000.0, [50, 99])
    return float(p50), float(p99)

