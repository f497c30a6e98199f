"""Train both models on a data set's training split and save a checkpoint."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from ecrs.data.dataset import Dataset
from ecrs.data.split import temporal_split
from ecrs.evaluation.evaluate import CheckpointScorer, evaluate_scorer
from ecrs.training.checkpoint import Checkpoint
from ecrs.training.data import EncodedData, encode_dataset
from ecrs.training.deepfm import DeepFMTraining, train_deepfm
from ecrs.training.two_tower import TwoTowerTraining, recall_candidates, train_two_tower

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TrainingParams:
    two_tower: TwoTowerTraining = field(default_factory=TwoTowerTraining)
    deepfm: DeepFMTraining = field(default_factory=DeepFMTraining)
    holdout_share: float = 0.2
    min_count: int = 1
    # Recent items per user row, the last ones they interacted with.
    history_length: int = 20
    # Recall candidates per user from which DeepFM draws hard negatives.
    hard_negative_pool: int = 200


def train(
    dataset: Dataset,
    output: Path,
    params: TrainingParams | None = None,
    *,
    evaluate: bool = True,
) -> Checkpoint:
    """Split, train the two-tower model and DeepFM, validate, and save to ``output``.

    Validation metrics are computed on the held-out split and stored in the
    checkpoint's ``metrics.json``. A ``holdout_share`` of 0 trains on every
    interaction, as a model to serve after evaluation should, and skips
    validation.
    """
    params = params or TrainingParams()
    if params.holdout_share == 0:
        train_part, heldout = dataset.interactions, dataset.interactions.iloc[:0]
        evaluate = False
    else:
        train_part, heldout = temporal_split(
            dataset, holdout_share=params.holdout_share
        )
    logger.info(
        "training on %d interactions, %d held out for validation",
        len(train_part),
        len(heldout),
    )
    data = encode_dataset(
        dataset,
        train_part,
        min_count=params.min_count,
        history_length=params.history_length,
    )
    checkpoint = train_models(data, params)
    if evaluate:
        report = evaluate_scorer(CheckpointScorer(checkpoint), dataset, data, heldout)
        checkpoint.metrics.update(report.to_dict())
        logger.info("validation:\n%s", report.format_table())
    checkpoint.save(output)
    return checkpoint


def train_models(data: EncodedData, params: TrainingParams) -> Checkpoint:
    """Train both models on ``data``; record their times and loss curves.

    The checkpoint's ``metrics["training"]`` holds, per model, the training
    seconds and the mean loss of each epoch.
    """
    two_tower_curve: list[float] = []
    started = time.perf_counter()
    two_tower = train_two_tower(data, params.two_tower, two_tower_curve)
    two_tower_seconds = time.perf_counter() - started
    started = time.perf_counter()
    candidates = recall_candidates(two_tower, data, params.hard_negative_pool)
    deepfm_curve: list[float] = []
    deepfm = train_deepfm(data, params.deepfm, candidates, deepfm_curve)
    deepfm_seconds = time.perf_counter() - started
    logger.info(
        "trained the two-tower model in %.1f s and DeepFM in %.1f s",
        two_tower_seconds,
        deepfm_seconds,
    )
    training = {
        "two_tower": {"seconds": two_tower_seconds, "epoch_loss": two_tower_curve},
        "deepfm": {"seconds": deepfm_seconds, "epoch_loss": deepfm_curve},
    }
    return Checkpoint(data.encoder, two_tower, deepfm, {"training": training})
