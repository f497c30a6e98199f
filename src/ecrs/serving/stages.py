"""Per-stage timing of the request path.

``Recommender`` measures its stages with a ``StageTimer``, and the served
models and the benchmark's reference pipeline read the same figures: the
Triton adapter exports them as a histogram per stage at Triton's metrics
endpoint (``ecrs.serving.stage_metrics``), the reference keeps them in memory.

The stages of one recommendation:

- ``user_features``: read a known user's features and history from Redis and
  encode the user row (a new user's row is only encoded);
- ``user_tower``: run the user tower (a BLS call under Triton);
- ``vector_search``: search Milvus;
- ``item_features``: read the candidates' features and encode their rows;
- ``ranking``: run DeepFM (a BLS call under Triton), blend and sort;
- ``total``: the whole request handler, from its input arrays to its output
  arrays, so ``total`` minus the other stages is request parsing, output
  building and the steps between stages.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

USER_FEATURES = "user_features"
USER_TOWER = "user_tower"
VECTOR_SEARCH = "vector_search"
ITEM_FEATURES = "item_features"
RANKING = "ranking"
TOTAL = "total"
STAGES = (USER_FEATURES, USER_TOWER, VECTOR_SEARCH, ITEM_FEATURES, RANKING, TOTAL)

# The Prometheus histogram family of the stage times at Triton's metrics endpoint.
METRIC_FAMILY = "ecrs_stage_duration_seconds"
# Upper bounds, in seconds, of the stage histograms' buckets: 25 us to about
# 2 s, each 1.25 times the previous, so a percentile read from the buckets is
# within 25% of the true value.
HISTOGRAM_BUCKETS_S = tuple(round(25e-6 * 1.25**i, 9) for i in range(51))


class StageTimer:
    """Collect the seconds each stage of a request took.

    Each thread has its own current request, so one timer serves a request
    path that several threads run at once. A stage measured twice in one
    request (a filtered search that widens) adds up.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    @contextmanager
    def request(self) -> Iterator[None]:
        """Time one request: clear the stages and record ``total`` at the end.

        The stages of a request that raised are recorded too, so callers that
        count only successes must check for the exception themselves.
        """
        self._local.current = {}
        started = time.perf_counter()
        try:
            yield
        finally:
            current = self._local.current
            current[TOTAL] = time.perf_counter() - started
            self._local.last = current
            self._local.current = None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time one stage of the current request; outside a request, do nothing."""
        current = getattr(self._local, "current", None)
        if current is None:
            yield
            return
        started = time.perf_counter()
        try:
            yield
        finally:
            current[name] = current.get(name, 0.0) + time.perf_counter() - started

    def last(self) -> dict[str, float]:
        """Return the stage seconds of this thread's last finished request."""
        return dict(getattr(self._local, "last", None) or {})
