"""The full quality evaluation: every method, the cold-start run, the served path.

``run_quality`` trains the models on the main split, or takes a trained
checkpoint, and evaluates them beside the reference baselines. It then trains
a second pair of models without the cold-start users and evaluates those
users as new users. On request, it also evaluates the served path against the
offline numbers. ``QualityRun`` contains everything the quality page shows.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ecrs.data.dataset import Dataset
from ecrs.data.split import temporal_split
from ecrs.evaluation import metrics
from ecrs.evaluation.cold_start import cold_start_split
from ecrs.evaluation.evaluate import (
    EASE,
    ITEM_KNN,
    KS,
    MAX_BASELINE_ITEMS,
    POPULARITY,
    TWO_STAGE,
    TWO_TOWER,
    CheckpointScorer,
    EvaluationReport,
    evaluate_scorer,
)
from ecrs.evaluation.served import served_rankings
from ecrs.stack.machine import cpu_model
from ecrs.training.checkpoint import Checkpoint
from ecrs.training.data import encode_dataset
from ecrs.training.pipeline import TrainingParams, train_models

logger = logging.getLogger(__name__)

# Largest difference allowed between a served metric and the offline one.
SERVED_TOLERANCE = 0.005


@dataclass
class ServedComparison:
    """Two-stage metrics through Triton beside the offline ones."""

    metrics: dict[str, float]
    offline: dict[str, float]
    seconds: float
    users: int
    tolerance: float = SERVED_TOLERANCE

    @property
    def max_difference(self) -> float:
        return max(abs(self.metrics[name] - self.offline[name]) for name in self.metrics)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "offline": self.offline,
            "max_difference": self.max_difference,
            "tolerance": self.tolerance,
            "seconds": self.seconds,
            "users": self.users,
        }


@dataclass
class QualityRun:
    """Everything the quality page reports, with ``to_dict`` for its JSON copy."""

    dataset: dict[str, Any]
    main: EvaluationReport
    training: dict[str, Any]
    cold_start: EvaluationReport | None = None
    cold_start_users: int = 0
    served: ServedComparison | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)

    def targets(self) -> list[Target]:
        return quality_targets(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "settings": self.settings,
            "machine": self.machine,
            "main": self.main.to_dict(),
            "cold_start": None if self.cold_start is None else self.cold_start.to_dict(),
            "cold_start_users": self.cold_start_users,
            "served": None if self.served is None else self.served.to_dict(),
            "training": self.training,
            "targets": [target.to_dict() for target in self.targets()],
        }


@dataclass(frozen=True)
class Target:
    """A quality goal: ``value`` must reach ``threshold`` (or exceed it when strict).

    ``skipped`` gives the reason a goal was not evaluated in this run, and its
    value and threshold are then NaN.
    """

    name: str
    value: float
    threshold: float
    strict: bool = False
    skipped: str = ""

    @property
    def met(self) -> bool:
        if self.skipped:
            return False
        return self.value > self.threshold if self.strict else self.value >= self.threshold

    def describe(self) -> str:
        """Return "met by X", "missed by X" or "not evaluated: why"."""
        if self.skipped:
            return f"not evaluated: {self.skipped}"
        margin = abs(self.value - self.threshold)
        return f"{'met' if self.met else 'missed'} by {margin:.4f}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "threshold": self.threshold,
            "strict": self.strict,
            "met": self.met,
            "skipped": self.skipped,
        }


def run_quality(
    dataset: Dataset,
    *,
    params: TrainingParams,
    checkpoint: Checkpoint | None = None,
    cold_start_share: float = 0.1,
    served_dir: Path | None = None,
    seed: int = 0,
) -> QualityRun:
    """Run the whole evaluation; train unless ``checkpoint`` is given.

    ``cold_start_share`` 0 skips the cold-start run. With ``served_dir``, a
    private stack in that folder serves the checkpoint for the served-path
    comparison.
    """
    train_part, heldout = temporal_split(dataset, holdout_share=params.holdout_share)
    if checkpoint is None:
        data = encode_dataset(
            dataset, train_part, min_count=params.min_count,
            history_length=params.history_length,
        )  # fmt: skip
        checkpoint = train_models(data, params)
    else:
        data = encode_dataset(dataset, train_part, encoder=checkpoint.encoder)
    main = evaluate_scorer(
        CheckpointScorer(checkpoint), dataset, data, heldout, seed=seed, baselines=True
    )
    logger.info("evaluated %d held-out users", main.users)
    run = QualityRun(
        dataset=dataset_summary(dataset),
        main=main,
        training={"main": checkpoint.metrics.get("training", {})},
        settings=settings_summary(params, checkpoint, cold_start_share, seed),
        machine=machine_summary(),
    )
    if cold_start_share > 0:
        add_cold_start(run, dataset, train_part, params, cold_start_share, seed)
    if served_dir is not None:
        run.served = compare_served(
            checkpoint, dataset, train_part, heldout, main, served_dir
        )
    return run


def add_cold_start(
    run: QualityRun,
    dataset: Dataset,
    train_part: pd.DataFrame,
    params: TrainingParams,
    share: float,
    seed: int,
) -> None:
    """Train without the cold-start users and evaluate them as new users."""
    split = cold_start_split(dataset, train_part, share=share, seed=seed)
    data = encode_dataset(
        dataset, split.train, min_count=params.min_count,
        history_length=params.history_length,
    )  # fmt: skip
    checkpoint = train_models(data, params)
    run.cold_start = evaluate_scorer(
        CheckpointScorer(checkpoint), dataset, data, split.heldout, seed=seed
    )
    run.cold_start_users = len(split.users)
    run.training["cold start"] = checkpoint.metrics.get("training", {})
    logger.info("evaluated %d cold-start users", run.cold_start_users)


def compare_served(
    checkpoint: Checkpoint,
    dataset: Dataset,
    train_part: pd.DataFrame,
    heldout: pd.DataFrame,
    offline: EvaluationReport,
    state_dir: Path,
) -> ServedComparison:
    """Evaluate the two-stage ranking through Triton with the offline protocol."""
    spec = dataset.schema.interactions
    relevant = heldout.groupby(spec.user_id)[spec.item_id].agg(set).to_dict()
    served = served_rankings(
        checkpoint, dataset, train_part, relevant, top_n=max(KS), state_dir=state_dir
    )
    values = {}
    for k in KS:
        values[f"recall@{k}"] = metrics.recall_at_k(served.rankings, relevant, k)
        values[f"ndcg@{k}"] = metrics.ndcg_at_k(served.rankings, relevant, k)
    return ServedComparison(
        metrics=values,
        offline={name: offline.methods[TWO_STAGE][name] for name in values},
        seconds=served.seconds,
        users=len(served.rankings),
    )


def quality_targets(run: QualityRun) -> list[Target]:
    """Return the goals the quality page checks, from the run's own numbers.

    A goal whose numbers this run did not compute is listed as not evaluated.
    """
    methods = run.main.methods
    two_tower_recall = methods[TWO_TOWER]["recall@50"]
    two_stage_ndcg = methods[TWO_STAGE]["ndcg@10"]
    targets = [
        Target("two-tower recall@50 >= 0.33", two_tower_recall, 0.33),
        Target("two-stage NDCG@10 >= 0.20", two_stage_ndcg, 0.20),
        _baseline_target(
            "two-tower recall@50 above item KNN's", two_tower_recall,
            methods.get(ITEM_KNN, {}).get("recall@50"),
        ),
        _baseline_target(
            "two-stage NDCG@10 above EASE's", two_stage_ndcg,
            methods.get(EASE, {}).get("ndcg@10"),
        ),
    ]  # fmt: skip
    cold_name = "cold-start two-stage recall@50 above popularity's"
    if run.cold_start is None:
        targets.append(_skipped(cold_name, "the run had --cold-start-share 0"))
    else:
        cold = run.cold_start.methods
        targets.append(
            Target(
                cold_name,
                cold[TWO_STAGE]["recall@50"],
                cold[POPULARITY]["recall@50"],
                strict=True,
            )
        )
    served_name = "served metrics within the tolerance of the offline ones"
    if run.served is None:
        targets.append(_skipped(served_name, "the run had no --served"))
    else:
        targets.append(
            Target(served_name, -run.served.max_difference, -run.served.tolerance)
        )
    return targets


def _baseline_target(name: str, value: float, baseline: float | None) -> Target:
    if baseline is None:
        return _skipped(name, f"no item-item baselines above {MAX_BASELINE_ITEMS} items")
    return Target(name, value, baseline, strict=True)


def _skipped(name: str, reason: str) -> Target:
    return Target(name, math.nan, math.nan, skipped=reason)


def dataset_summary(dataset: Dataset) -> dict[str, Any]:
    return {
        "name": dataset.schema.name,
        "users": len(dataset.users),
        "items": len(dataset.items),
        "interactions": len(dataset.interactions),
    }


def settings_summary(
    params: TrainingParams, checkpoint: Checkpoint, cold_share: float, seed: int
) -> dict[str, Any]:
    return {
        "holdout_share": params.holdout_share,
        "history_length": checkpoint.encoder.users.history_length,
        "two_tower_epochs": params.two_tower.epochs,
        "deepfm_epochs": params.deepfm.epochs,
        "new_user_share": params.two_tower.new_user_share,
        "vector_dim": checkpoint.two_tower.user_tower.config.output_dim,
        "cold_start_share": cold_share,
        "seed": seed,
    }


def machine_summary() -> dict[str, Any]:
    """Return the CPU, core count and library versions the run used."""
    import onnxruntime

    from ecrs.paddle_runtime import paddle

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "paddlepaddle": paddle.__version__,
        "onnxruntime": onnxruntime.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
