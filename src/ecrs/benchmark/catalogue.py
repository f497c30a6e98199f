"""Build the benchmark's catalogues: generated shop data and a model for each size.

A catalogue of N items is the generated shop data set with N items and a
fixed number of users and interactions, and a model trained on it for one
epoch per tower with the default architecture (64-dimensional vectors).
Latency does not depend on how well a model is trained, only on its shape and
the catalogue's size, so one epoch is enough. Each catalogue is kept in the
benchmark's work folder and reused by later runs with the same settings.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ecrs.data.dataset import Dataset
from ecrs.data.generate import generate_shop_dataset
from ecrs.training.deepfm import DeepFMTraining
from ecrs.training.pipeline import TrainingParams, train
from ecrs.training.two_tower import TwoTowerTraining

logger = logging.getLogger(__name__)

SETTINGS_FILE = "catalogue.json"


@dataclass(frozen=True, kw_only=True)
class CatalogueSpec:
    """The generated data and the training of one benchmark catalogue."""

    items: int
    users: int = 10_000
    interactions: int = 100_000
    dim: int = 64
    seed: int = 0

    @property
    def name(self) -> str:
        return f"items-{self.items}"


@dataclass(frozen=True)
class Catalogue:
    """A built catalogue: its data set, trained checkpoint and build seconds."""

    spec: CatalogueSpec
    dataset: Dataset
    checkpoint: Path
    build_seconds: float


def build_catalogue(spec: CatalogueSpec, folder: Path) -> Catalogue:
    """Generate the data and train the model into ``folder``, or reuse them.

    A folder whose recorded settings equal ``spec`` is reused as it is, so a
    second run skips generation and training.
    """
    settings = folder / SETTINGS_FILE
    data_folder = folder / "data"
    checkpoint = folder / "checkpoint"
    if settings.exists() and json.loads(settings.read_text()) == asdict(spec):
        logger.info("reusing the catalogue of %d items in %s", spec.items, folder)
        recorded = json.loads((folder / "build.json").read_text())
        return Catalogue(
            spec, Dataset.load(data_folder), checkpoint, recorded["seconds"]
        )
    started = time.perf_counter()
    logger.info(
        "generating %d items, %d users and %d interactions",
        spec.items,
        spec.users,
        spec.interactions,
    )
    settings.unlink(missing_ok=True)
    dataset = generate_shop_dataset(
        num_users=spec.users,
        num_items=spec.items,
        num_interactions=spec.interactions,
        seed=spec.seed,
    )
    dataset = Dataset.load(dataset.save(data_folder))
    train(dataset, checkpoint, training_params(spec))
    seconds = time.perf_counter() - started
    (folder / "build.json").write_text(json.dumps({"seconds": seconds}))
    settings.write_text(json.dumps(asdict(spec)))
    return Catalogue(spec, dataset, checkpoint, seconds)


def training_params(spec: CatalogueSpec) -> TrainingParams:
    """Return one epoch per model with the default architecture, on every interaction."""
    return TrainingParams(
        two_tower=TwoTowerTraining(epochs=1, output_dim=spec.dim, seed=spec.seed),
        deepfm=DeepFMTraining(epochs=1, seed=spec.seed),
        holdout_share=0.0,
    )
