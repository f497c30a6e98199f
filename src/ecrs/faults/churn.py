"""Catalogue updates and new interactions while the soak runs.

Every ``interval_s`` a round adds ``ITEMS_PER_ROUND`` new items (copies of
catalogue items' features under new ids), removes the items added
``KEEP_ROUNDS`` rounds earlier, so the catalogue stays the same size, and
records ``EVENTS_PER_ROUND`` interactions of known users. Each change goes
through ``StoreUpdater``, the code path of ``ecrs items`` and ``ecrs events``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ecrs.config import StackConfig
from ecrs.data.dataset import Dataset
from ecrs.errors import EcrsError
from ecrs.stores.updates import StoreUpdater
from ecrs.training.data import entity_records

logger = logging.getLogger(__name__)

ITEMS_PER_ROUND = 10
KEEP_ROUNDS = 3
EVENTS_PER_ROUND = 20
ROUND_INTERVAL_S = 2.0


@dataclass
class ChurnCounts:
    """Changes applied, and the errors of the rounds that failed."""

    rounds: int = 0
    items_added: int = 0
    items_removed: int = 0
    events: int = 0
    errors: list[str] = field(default_factory=list)


class CatalogueChurn:
    """Apply catalogue and interaction changes on a thread until ``stop``."""

    def __init__(
        self,
        config: StackConfig,
        dataset: Dataset,
        clock: Callable[[], float],
        *,
        interval_s: float = ROUND_INTERVAL_S,
        seed: int = 0,
    ) -> None:
        self.config = config
        self.clock = clock
        self.interval_s = interval_s
        self.rng = random.Random(seed)
        ids, records = entity_records(dataset.items, dataset.schema.items.id)
        self.item_records = records
        self.item_ids = [str(item_id) for item_id in ids]
        self.user_ids = [str(user) for user in dataset.users[dataset.schema.users.id]]
        self.counts = ChurnCounts()
        self._added: deque[list[str]] = deque()
        self._next_id = 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="ecrs-churn", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=120)

    def _run(self) -> None:
        updater = StoreUpdater(self.config.model_repository, self.config.stores)
        try:
            while not self._stopped.wait(self.interval_s):
                try:
                    self.round(updater)
                except EcrsError as exc:
                    self.counts.errors.append(f"{self.clock():.0f} s: {exc}")
                    logger.warning("catalogue round failed: %s", exc)
        finally:
            updater.close()

    def round(self, updater: StoreUpdater) -> None:
        """Add a batch of items, remove an old batch, record interactions."""
        new_ids = [f"churn-{self._next_id + n:07d}" for n in range(ITEMS_PER_ROUND)]
        self._next_id += ITEMS_PER_ROUND
        records = [dict(self.rng.choice(self.item_records)) for _ in new_ids]
        updater.upsert_items(new_ids, records)
        self._added.append(new_ids)
        self.counts.items_added += len(new_ids)
        if len(self._added) > KEEP_ROUNDS:
            old = self._added.popleft()
            updater.remove_items(old)
            self.counts.items_removed += len(old)
        users = [self.rng.choice(self.user_ids) for _ in range(EVENTS_PER_ROUND)]
        items = [self.rng.choice(self.item_ids) for _ in range(EVENTS_PER_ROUND)]
        now = int(time.time())
        self.counts.events += updater.record_interactions(
            users, items, [now] * len(users)
        )
        self.counts.rounds += 1
