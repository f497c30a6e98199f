"""The fault suite's own stack: generated shop data, small models, loaded stores.

Everything lives under one folder (``<state-dir>/faults`` from the CLI), on
free loopback ports, so the suite never touches the stack a user runs. The
data and the trained checkpoint are kept and reused by the next run; the
Redis and Milvus data are removed before each start, so every run begins
from the same loaded catalogue.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ecrs.config import StackConfig
from ecrs.data.dataset import Dataset
from ecrs.data.generate import generate_shop_dataset
from ecrs.export.repository import export_checkpoint
from ecrs.serving.layout import USER_TOWER, list_versions
from ecrs.stack.launcher import start_stack, stop_stack
from ecrs.stack.ports import pick_free_ports
from ecrs.stack.running import serve_version
from ecrs.stores.loader import load_stores
from ecrs.training.checkpoint import Checkpoint
from ecrs.training.deepfm import DeepFMTraining
from ecrs.training.pipeline import TrainingParams, train
from ecrs.training.two_tower import TwoTowerTraining

logger = logging.getLogger(__name__)

# Small enough to train in about a minute on two cores; the suite tests
# serving, not model quality.
SHOP_SIZE = {"num_users": 2000, "num_items": 1000, "num_interactions": 40_000}
TRAINING = TrainingParams(
    two_tower=TwoTowerTraining(
        epochs=2, batch_size=512, output_dim=32, embedding_dim=8, hidden=(64,)
    ),
    deepfm=DeepFMTraining(epochs=1, batch_size=1024, embedding_dim=4, hidden=(32,)),
)
STORE_FOLDERS = ("redis", "milvus")


def prepare_dataset(folder: Path, seed: int = 0) -> Dataset:
    """Return the suite's shop data set, generating it on the first run."""
    data_dir = folder / "data" / "shop"
    if not (data_dir / "schema.json").is_file():
        logger.info("generating shop data into %s", data_dir)
        generate_shop_dataset(**SHOP_SIZE, seed=seed).save(data_dir)
    return Dataset.load(data_dir)


def prepare_repository(folder: Path, dataset: Dataset) -> Path:
    """Train and export the suite's models unless a version is exported already."""
    repository = folder / "model_repository"
    if list_versions(repository, USER_TOWER):
        return repository
    checkpoint_dir = folder / "checkpoints" / "shop"
    logger.info("training the suite's small models into %s", checkpoint_dir)
    train(dataset, checkpoint_dir, TRAINING)
    export_checkpoint(Checkpoint.load(checkpoint_dir), repository)
    return repository


def start_loaded_stack(folder: Path, dataset: Dataset) -> StackConfig:
    """Start Redis, Milvus and Triton on free ports with empty stores, load
    the data set, and serve the newest exported version."""
    stop_stack(folder)
    for name in STORE_FOLDERS:
        shutil.rmtree(folder / name, ignore_errors=True)
    config = StackConfig(state_dir=folder.resolve(), ports=pick_free_ports())
    start_stack(config)
    loaded = load_stores(dataset, config.model_repository, config.stores)
    serve_version(
        config.triton_grpc_url,
        config.model_repository,
        config.stores,
        loaded.version,
        log_hint=f"see {config.logs_dir / 'triton.log'}",
    )
    return config
