"""Fixtures shared by unit and integration tests: small data and models.

The models train for one or two epochs on a few hundred users, which takes
seconds; they are for checking behaviour, not quality.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ecrs.export.repository import ExportResult, export_checkpoint

from ecrs.data.dataset import Dataset
from ecrs.data.generate import generate_shop_dataset
from ecrs.training.checkpoint import Checkpoint
from ecrs.training.deepfm import DeepFMTraining
from ecrs.training.pipeline import TrainingParams, train
from ecrs.training.two_tower import TwoTowerTraining

SMALL_TRAINING = TrainingParams(
    two_tower=TwoTowerTraining(
        epochs=2, batch_size=256, output_dim=16, embedding_dim=8, hidden=(32,)
    ),
    deepfm=DeepFMTraining(epochs=1, batch_size=512, embedding_dim=4, hidden=(16,)),
)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """A generated shop data set, saved and loaded back as a user's would be."""
    dataset = generate_shop_dataset(
        num_users=300, num_items=200, num_interactions=6000, seed=7
    )
    folder = dataset.save(tmp_path_factory.mktemp("data") / "shop")
    return Dataset.load(folder)


@pytest.fixture(scope="session")
def small_checkpoint(
    small_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    folder = tmp_path_factory.mktemp("checkpoint")
    train(small_dataset, folder, SMALL_TRAINING)
    return folder


@pytest.fixture(scope="session")
def exported(
    small_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> ExportResult:
    """The small checkpoint exported as version 1 of a fresh served repository."""
    served = tmp_path_factory.mktemp("served") / "model_repository"
    return export_checkpoint(Checkpoint.load(small_checkpoint), served)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run on any skipped test when ECRS_FORBID_SKIPS=1 (set in CI)."""
    if os.environ.get("ECRS_FORBID_SKIPS") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped:
        reporter.write_line(
            f"ECRS_FORBID_SKIPS=1: {skipped} test(s) skipped; every test must run here",
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
