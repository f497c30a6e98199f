"""Rollout, canary, promotion and rollback against a real stack of their own,
with a client sending requests at concurrency 4 throughout."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from ecrs.client.client import RecommendClient
from ecrs.client.metrics import metric_value
from ecrs.config import StackConfig
from ecrs.data.dataset import Dataset
from ecrs.errors import RolloutError
from ecrs.export.repository import export_checkpoint
from ecrs.rollout import rollout as rollout_module
from ecrs.rollout import vectors as rollout_vectors
from ecrs.rollout.rollout import RolloutSettings, VersionManager
from ecrs.rollout.status import version_statuses
from ecrs.serving.layout import DEEPFM_RANK, USER_TOWER, list_versions
from ecrs.stack.launcher import start_stack, stop_stack
from ecrs.stack.ports import LOOPBACK, pick_free_ports
from ecrs.stack.running import serve_version
from ecrs.stores.feature_store import ITEM, FeatureStore
from ecrs.stores.loader import load_stores
from ecrs.training.checkpoint import Checkpoint

pytestmark = pytest.mark.integration

SETTINGS = RolloutSettings(drain_s=1.0, gate_users=150, keep=3)


@pytest.fixture(scope="module")
def rollout_stack(
    small_dataset: Dataset, small_checkpoint: Path, tmp_path_factory
) -> Iterator[StackConfig]:
    """A stack serving version 1 of the small checkpoint, for this module alone,
    so that its version changes do not reach the other tests."""
    config = StackConfig(
        state_dir=tmp_path_factory.mktemp("rollout-stack"), ports=pick_free_ports()
    )
    export_checkpoint(Checkpoint.load(small_checkpoint), config.model_repository)
    start_stack(config)
    try:
        load_stores(small_dataset, config.model_repository, config.stores, version=1)
        serve_version(config.triton_grpc_url, config.model_repository, config.stores, 1)
        yield config
    finally:
        stop_stack(config.state_dir)


@pytest.fixture()
def manager(rollout_stack: StackConfig) -> Iterator[VersionManager]:
    versions = VersionManager(
        rollout_stack.model_repository,
        rollout_stack.stores,
        rollout_stack.triton_grpc_url,
        SETTINGS,
    )
    yield versions
    versions.close()


def user_ids(dataset: Dataset) -> list[str]:
    return dataset.users[dataset.schema.users.id].tolist()


def features_of(dataset: Dataset, index: int) -> dict:
    row = dataset.users.iloc[index]
    return {name: row[name] for name in dataset.schema.users.feature_names}


class Traffic:
    """Recommendation requests from 4 threads until stopped; records every
    response's version and collection, and every error."""

    def __init__(self, url: str, dataset: Dataset) -> None:
        self.url = url
        self.users = user_ids(dataset)
        self.features = [features_of(dataset, i) for i in range(5)]
        self.responses: list[tuple[int, str]] = []
        self.errors: list[Exception] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=4)
        self._lock = threading.Lock()

    def __enter__(self) -> Traffic:
        for worker in range(4):
            self._pool.submit(self._run, worker)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True)

    def _run(self, worker: int) -> None:
        with RecommendClient(self.url) as client:
            count = 0
            while not self._stop.is_set():
                count += 1
                try:
                    if count % 10 == 0:
                        items = client.recommend(
                            user_features=self.features[count % 5], top_n=5
                        )
                    else:
                        user = self.users[(worker * 7919 + count) % len(self.users)]
                        items = client.recommend(user_id=user, top_n=5)
                except Exception as exc:  # every failure counts
                    with self._lock:
                        self.errors.append(exc)
                    continue
                with self._lock:
                    self.responses.append((items.model_version, items.collection))


def metric(stack: StackConfig, name: str, version: int) -> float:
    """Read one recommend_ensemble counter of ``version`` from Triton's metrics."""
    url = f"http://{LOOPBACK}:{stack.ports.triton_metrics}/metrics"
    value = metric_value(url, name, model="recommend_ensemble", version=str(version))
    return 0.0 if value is None else value


def collection_of(manager: VersionManager, version: int) -> str:
    return manager.vectors.collection(version)


def check_provenance(traffic: Traffic, manager: VersionManager) -> set[int]:
    assert traffic.errors == []
    assert len(traffic.responses) > 20
    for version, collection in traffic.responses:
        assert collection == collection_of(manager, version)
    return {version for version, _ in traffic.responses}


def test_rollout_under_load_drops_nothing(
    rollout_stack, manager, small_dataset, small_checkpoint
):
    with Traffic(rollout_stack.triton_grpc_url, small_dataset) as traffic:
        report = manager.roll_out(Checkpoint.load(small_checkpoint), small_dataset)
    assert report.pointer.version == 2
    assert report.pointer.previous == 1
    assert report.candidate.recall >= report.serving.recall - SETTINGS.margin
    assert check_provenance(traffic, manager) == {1, 2}
    statuses = {status.version: status for status in version_statuses(manager)}
    assert statuses[2].role == "serving"
    assert statuses[2].loaded
    assert not statuses[1].loaded  # drained and unloaded
    assert statuses[1].vectors == len(small_dataset.items)  # kept for rollback


def test_rollback_under_load_drops_nothing(rollout_stack, manager, small_dataset):
    with Traffic(rollout_stack.triton_grpc_url, small_dataset) as traffic:
        report = manager.roll_back()
    assert report.pointer.version == 1
    assert check_provenance(traffic, manager) == {1, 2}
    with RecommendClient(rollout_stack.triton_grpc_url) as client:
        items = client.recommend(user_id=user_ids(small_dataset)[0], top_n=3)
    assert items.model_version == 1


def test_canary_gets_its_share_and_keeps_users(
    rollout_stack, manager, small_dataset, small_checkpoint
):
    with Traffic(rollout_stack.triton_grpc_url, small_dataset) as traffic:
        report = manager.roll_out(
            Checkpoint.load(small_checkpoint), small_dataset, canary_share=0.1
        )
    canary = report.pointer.canary_version
    assert canary == 3
    assert report.pointer.version == 1
    assert check_provenance(traffic, manager) <= {1, canary}
    users = user_ids(small_dataset)
    with RecommendClient(rollout_stack.triton_grpc_url) as client:
        first = {u: client.recommend(user_id=u, top_n=1).model_version for u in users}
        again = {
            u: client.recommend(user_id=u, top_n=1).model_version for u in users[:60]
        }
        features = features_of(small_dataset, 3)
        by_features = {
            client.recommend(user_features=features, top_n=1).model_version
            for _ in range(5)
        }

    share = Counter(first.values())[canary] / len(users)
    # 300 users at 10%: the standard deviation is 0.017, so 0.04 to 0.16 is
    # about 3.5 of them either way.
    assert 0.04 <= share <= 0.16
    assert all(again[u] == first[u] for u in again)
    assert len(by_features) == 1
    # Both versions' requests show on Triton's metrics endpoint.
    for version in (1, canary):
        assert metric(rollout_stack, "ecrs_request_success", version) > 0
        assert metric(rollout_stack, "ecrs_request_duration_us", version) > 0
        assert metric(rollout_stack, "ecrs_request_failure", version) == 0

    with Traffic(rollout_stack.triton_grpc_url, small_dataset) as traffic:
        promoted = manager.promote()
    assert promoted.pointer.version == canary
    assert promoted.pointer.canary_version is None
    assert check_provenance(traffic, manager) <= {1, canary}


def test_corrupt_export_keeps_old_version(
    rollout_stack, manager, small_dataset, small_checkpoint, monkeypatch
):
    serving = manager.current().version
    export = rollout_module.export_checkpoint

    def corrupting_export(checkpoint, repository, **kwargs):
        result = export(checkpoint, repository, **kwargs)
        onnx = repository / DEEPFM_RANK / str(result.version) / "model.onnx"
        onnx.write_bytes(onnx.read_bytes()[:100])
        return result

    monkeypatch.setattr(rollout_module, "export_checkpoint", corrupting_export)
    with pytest.raises(RolloutError) as info:
        manager.roll_out(Checkpoint.load(small_checkpoint), small_dataset)
    assert info.value.step == "vectors"
    assert "model.onnx" in str(info.value) or "deepfm" in str(info.value).lower()
    assert_still_serving(rollout_stack, manager, small_dataset, serving)


def test_worse_candidate_is_refused(
    rollout_stack, manager, small_dataset, small_checkpoint
):
    serving = manager.current().version
    worse = Checkpoint.load(small_checkpoint)
    scramble(worse)
    with pytest.raises(RolloutError) as info:
        manager.roll_out(worse, small_dataset)
    assert info.value.step == "quality gate"
    message = str(info.value)
    assert f"version {serving}: recall@50" in message
    assert "--force" in message
    assert_still_serving(rollout_stack, manager, small_dataset, serving)


def scramble(checkpoint: Checkpoint) -> None:
    """Replace every weight with noise: a model that ranks at random."""
    rng = np.random.default_rng(0)
    for model in (checkpoint.two_tower, checkpoint.deepfm):
        for parameter in model.parameters():
            noise = rng.normal(0.0, 1.0, parameter.shape).astype("float32")
            parameter.set_value(noise)


def assert_still_serving(rollout_stack, manager, dataset, serving: int) -> None:
    """The serving version responds, and no folder of the failed version is left."""
    assert manager.current().version == serving
    with RecommendClient(rollout_stack.triton_grpc_url) as client:
        items = client.recommend(user_id=user_ids(dataset)[0], top_n=5)
    assert len(items) == 5
    assert items.model_version == serving
    on_disk = list_versions(rollout_stack.model_repository, USER_TOWER)
    assert max(on_disk) <= 3


def test_changes_during_the_copy_reach_the_new_collection(
    rollout_stack, manager, small_dataset, small_checkpoint, monkeypatch
):
    """An item added and one removed after the copy took its snapshot (their
    Milvus writes missed the new collection) are replayed before the switch."""
    features = FeatureStore(rollout_stack.stores, small_dataset.schema.name)
    catalogue = small_dataset.items.set_index(small_dataset.schema.items.id)
    removed = catalogue.index[5]
    template = {key: str(value) for key, value in catalogue.iloc[6].items()}
    replay = rollout_vectors.replay_changes

    def change_then_replay(models, store, vectors, name, after, stored):
        features.write(ITEM, ["late-item"], [template])
        features.delete(features.key(ITEM, removed))
        features.record_item_changes(["late-item", removed])
        return replay(models, store, vectors, name, after, stored)

    monkeypatch.setattr(rollout_vectors, "replay_changes", change_then_replay)
    report = manager.roll_out(
        Checkpoint.load(small_checkpoint), small_dataset, canary_share=0.0
    )
    version = report.pointer.version
    collection = manager.vectors.collection(version)
    visible = manager.vectors.visible_ids(collection, ["late-item", removed])
    features.client.close()
    assert visible == {"late-item"}
    # keep=3: the oldest versions beyond three went, with their collections.
    on_disk = list_versions(rollout_stack.model_repository, USER_TOWER)
    assert len(on_disk) == 3
    assert 1 not in on_disk
    assert not manager.vectors.has_collection(manager.vectors.collection(1))
