"""Roll out a checkpoint as a new version, canary it, promote it, roll back.

A rollout runs these steps, and any failure leaves the serving version as
it was, unloads the candidate and removes its folders and collection:

1. export: the three ONNX models into version folders N (parity-checked);
2. vectors: item tower N over every stored item into collection N;
3. load: Triton loads version N beside the serving one (explicit model
   control, through the repository API);
4. warm-up: requests pinned to version N through every Python model;
5. quality gate: the candidate against the serving version on held-out
   users, refused when worse by more than the margin unless forced;
6. switch: one write of the serving pointer, or of its canary fields for a
   canary. The old version then drains and Triton unloads it. Folders and
   collections beyond the kept count are removed.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ecrs.client.client import RecommendClient
from ecrs.config import StoreConfig
from ecrs.data.dataset import Dataset
from ecrs.errors import EcrsError, RolloutError
from ecrs.export.repository import export_checkpoint
from ecrs.features.encoder import FeatureEncoder
from ecrs.rollout.gate import GateMetrics, held_out_targets, measure
from ecrs.rollout.vectors import build_collection
from ecrs.serving.layout import ONNX_MODELS, USER_TOWER, latest_version, list_versions
from ecrs.serving.model_configs import live_versions, set_live_versions
from ecrs.serving.onnx_models import OnnxModels
from ecrs.serving.versions import PointerStore, ServingPointer
from ecrs.stores.feature_store import USER, FeatureStore
from ecrs.stores.vector_store import VectorStore
from ecrs.training.checkpoint import Checkpoint

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Stored users whose requests warm a version up.
WARM_UP_USERS = 8
# Seconds to stop polling a drained version's request count.
DRAIN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class RolloutSettings:
    """Rollout checks and retention.

    ``margin`` is the largest drop in recall@50 the gate accepts; ``force``
    switches despite a larger one. ``keep`` is the number of versions kept
    on disk. ``drain_s`` is the least time an old version keeps its models
    loaded after the switch, in seconds.
    """

    margin: float = 0.02
    force: bool = False
    keep: int = 3
    gate_users: int = 200
    drain_s: float = 5.0
    warm_up_requests: int = 16


@dataclass(frozen=True)
class RolloutReport:
    """A rollout's outcome: the new pointer, both versions' gate metrics and
    the versions removed."""

    pointer: ServingPointer
    serving: GateMetrics | None
    candidate: GateMetrics | None
    removed: list[int]


class VersionManager:
    """Move the serving pointer between exported versions of one repository."""

    def __init__(
        self,
        repository: Path,
        stores: StoreConfig,
        triton_url: str,
        settings: RolloutSettings | None = None,
    ) -> None:
        self.repository = Path(repository)
        self.stores = stores
        self.triton_url = triton_url
        self.settings = settings or RolloutSettings()
        self.pointers = PointerStore(stores)
        self.vectors = VectorStore(stores)

    def close(self) -> None:
        self.pointers.close()
        self.vectors.close()

    def current(self) -> ServingPointer:
        """Return the pointer; before one is written, the newest loaded version."""
        pointer = self.pointers.read()
        if pointer is not None:
            return pointer
        live = live_versions(self.repository)
        return ServingPointer(live[-1] if live else latest_version(self.repository))

    def roll_out(
        self, checkpoint: Checkpoint, gate_data: Dataset, canary_share: float = 0.0
    ) -> RolloutReport:
        """Run every step for ``checkpoint``; with ``canary_share``, stop at a
        canary that gets that share of users instead of switching."""
        current = self.current()
        if current.canary_version is not None:
            raise RolloutError(
                "start",
                f"version {current.canary_version} is a canary now; promote it "
                "('ecrs promote') or roll it back ('ecrs rollback') first",
            )
        version = run_step(
            "export", lambda: export_checkpoint(checkpoint, self.repository).version
        )
        try:
            serving, candidate = self._prepare(current, version, gate_data)
        except RolloutError:
            self._discard(version, current)
            raise
        if canary_share > 0.0:
            pointer = replace(
                current, canary_version=version, canary_share=canary_share
            )
            run_step("switch", lambda: self.pointers.write(pointer))
            logger.info(
                "version %d is a canary for %.0f%% of users",
                version,
                canary_share * 100,
            )
            return RolloutReport(pointer, serving, candidate, [])
        pointer, removed = self._switch(current, version)
        return RolloutReport(pointer, serving, candidate, removed)

    def promote(self) -> RolloutReport:
        """Make the canary the serving version."""
        current = self.current()
        if current.canary_version is None:
            raise RolloutError(
                "promote",
                "no canary is running; start one with 'ecrs rollout --canary'",
            )
        pointer, removed = self._switch(current, current.canary_version)
        return RolloutReport(pointer, None, None, removed)

    def roll_back(self, target: int | None = None) -> RolloutReport:
        """End a canary, or serve ``target`` (default: the previous version) again."""
        current = self.current()
        if current.canary_version is not None and target is None:
            pointer = replace(current, canary_version=None, canary_share=0.0)
            run_step("switch", lambda: self.pointers.write(pointer))
            self._drain(current.canary_version)
            run_step("unload", lambda: self._load([current.version]))
            return RolloutReport(pointer, None, None, [])
        target = target or current.previous or self._older_version(current.version)
        collection = self.vectors.collection(target)
        if not self.vectors.has_collection(collection):
            raise RolloutError(
                "rollback",
                f"version {target} has no collection {collection}; roll it out "
                "again from its checkpoint",
            )
        run_step("load", lambda: self._load([*current.live, target]))
        run_step("warm-up", lambda: self._warm_up(target))
        pointer, removed = self._switch(current, target)
        return RolloutReport(pointer, None, None, removed)

    def _prepare(
        self, current: ServingPointer, version: int, gate_data: Dataset
    ) -> tuple[GateMetrics, GateMetrics]:
        run_step("vectors", lambda: self._build_vectors(version))
        run_step("load", lambda: self._load([*current.live, version]))
        run_step("warm-up", lambda: self._warm_up(version))
        return run_step(
            "quality gate", lambda: self._gate(current.version, version, gate_data)
        )

    def _build_vectors(self, version: int) -> None:
        models = OnnxModels(self.repository, version)
        features = FeatureStore(self.stores, models.encoder.schema.name)
        try:
            build_collection(models, features, self.vectors)
        finally:
            features.client.close()

    def _load(self, versions: list[int]) -> None:
        """Make Triton serve exactly ``versions`` of every ONNX model."""
        set_live_versions(self.repository, versions)
        with grpcclient.InferenceServerClient(self.triton_url) as client:
            for name in ONNX_MODELS:
                try:
                    client.load_model(name)
                except InferenceServerException as exc:
                    raise RolloutError(
                        "load",
                        f"Triton at {self.triton_url} failed to load {name}: {exc.message()}",
                    ) from exc

    def _warm_up(self, version: int) -> None:
        """Send requests pinned to ``version`` from several threads, so that
        each model instance loads the version before it serves users."""
        user_ids = self._sample_users()
        if not user_ids:
            raise RolloutError(
                "warm-up", "Redis has no users to warm up with; load the stores first"
            )
        count = self.settings.warm_up_requests
        with RecommendClient(self.triton_url) as client:
            profile = client.user(user_ids[0]).features

            def one(index: int) -> int:
                user_id = user_ids[index % len(user_ids)]
                if index % 4 == 3:
                    items = client.recommend(
                        user_features=profile, model_version=version
                    )
                else:
                    items = client.recommend(user_id=user_id, model_version=version)
                if items.model_version != version:
                    raise RolloutError(
                        "warm-up",
                        f"a request pinned to version {version} was served by {items.model_version}",
                    )
                return len(items)

            with ThreadPoolExecutor(max_workers=4) as pool:
                sizes = list(pool.map(one, range(count)))
            client.recall(user_id=user_ids[0], candidates=10)
        if not any(sizes):
            raise RolloutError(
                "warm-up", f"version {version} returned no items for {count} requests"
            )

    def _sample_users(self) -> list[str]:
        folder = self.repository / USER_TOWER / str(self.current().version)
        schema = FeatureEncoder.load(folder).schema
        features = FeatureStore(self.stores, schema.name)
        try:
            return list(itertools.islice(features.ids(USER), WARM_UP_USERS))
        finally:
            features.client.close()

    def _gate(
        self, serving: int, candidate: int, gate_data: Dataset
    ) -> tuple[GateMetrics, GateMetrics]:
        targets = held_out_targets(gate_data, self.settings.gate_users)
        with RecommendClient(self.triton_url) as client:
            old = measure(client, serving, targets)
            new = measure(client, candidate, targets)
        logger.info(
            "quality gate: serving %s; candidate %s", old.describe(), new.describe()
        )
        if new.users == 0:
            raise RolloutError(
                "quality gate",
                "no held-out user is in the stores; pass held-out data of loaded users",
            )
        drop = old.recall - new.recall
        if drop > self.settings.margin and not self.settings.force:
            raise RolloutError(
                "quality gate",
                f"the candidate is worse than the serving version by {drop:.4f} "
                f"recall@50, more than the margin {self.settings.margin}; serving "
                f"{old.describe()}; candidate {new.describe()}. Pass --force to "
                "roll it out anyway",
            )
        return old, new

    def _switch(
        self, current: ServingPointer, version: int
    ) -> tuple[ServingPointer, list[int]]:
        pointer = ServingPointer(version, previous=current.version)
        run_step("switch", lambda: self.pointers.write(pointer))
        logger.info("version %d serves now (was %d)", version, current.version)
        for old in current.live:
            if old != version:
                self._drain(old)
        run_step("unload", lambda: self._load([version]))
        return pointer, self._remove_old(pointer)

    def _drain(self, version: int) -> None:
        """Wait until no request uses ``version``: at least ``drain_s``, then
        until its user tower's request count stops growing."""
        time.sleep(self.settings.drain_s)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        with grpcclient.InferenceServerClient(self.triton_url) as client:
            count = _request_count(client, version)
            while time.monotonic() < deadline:
                time.sleep(1.0)
                latest = _request_count(client, version)
                if latest == count:
                    return
                count = latest

    def _remove_old(self, pointer: ServingPointer) -> list[int]:
        """Remove the folders and collections of versions beyond the kept count."""
        keep = set(pointer.live) | ({pointer.previous} if pointer.previous else set())
        versions = list_versions(self.repository, USER_TOWER)
        removable = [v for v in versions if v not in keep]
        excess = len(versions) - self.settings.keep
        removed = removable[: max(excess, 0)]
        for version in removed:
            self._delete_version(version)
        return removed

    def _discard(self, version: int, current: ServingPointer) -> None:
        """Undo a failed rollout: serve only the current versions, remove ``version``."""
        try:
            self._load(current.live)
        except EcrsError as exc:
            logger.warning("could not unload the failed version %d: %s", version, exc)
        self._delete_version(version)

    def _delete_version(self, version: int) -> None:
        for name in ONNX_MODELS:
            shutil.rmtree(self.repository / name / str(version), ignore_errors=True)
        self.vectors.drop(self.vectors.collection(version))
        logger.info("removed version %d and its collection", version)

    def _older_version(self, version: int) -> int:
        older = [v for v in list_versions(self.repository, USER_TOWER) if v < version]
        if not older:
            raise RolloutError(
                "rollback", f"no version older than {version} is on disk"
            )
        return older[-1]


def run_step(step: str, action: Callable[[], T]) -> T:
    """Run one rollout step; any failure becomes a RolloutError naming it."""
    try:
        return action()
    except RolloutError:
        raise
    except Exception as exc:  # every failure stops the rollout with its step
        raise RolloutError(step, str(exc) or repr(exc)) from exc


def _request_count(client: grpcclient.InferenceServerClient, version: int) -> int:
    try:
        stats = client.get_inference_statistics(USER_TOWER, str(version), as_json=True)
    except InferenceServerException:
        return -1  # unloaded already
    entries = stats.get("model_stats", [])
    return int(entries[0].get("inference_count", 0)) if entries else 0
