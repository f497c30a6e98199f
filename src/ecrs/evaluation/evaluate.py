"""Offline evaluation on the held-out interactions.

Protocol: per user, the latest interactions (by timestamp, ties by item id)
are held out. Each method ranks the catalogue without the user's training
items. Recall@K and NDCG@K are averaged over users with held-out items.
The methods are three reference baselines (popularity, item KNN and EASE;
see ``baselines``), two-tower recall alone, and two-tower recall of
``candidates`` items re-ranked as served (DeepFM's logit plus the recall
logit; see ``ecrs.serving.scoring``). DeepFM's AUC compares its scores of
held-out positives with those of uniformly sampled items the user never
interacted with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ecrs.data.dataset import Dataset
from ecrs.evaluation import metrics
from ecrs.evaluation.baselines import (
    ease_weights,
    interaction_matrix,
    item_knn_weights,
    tune_ease,
)
from ecrs.evaluation.rankings import (
    EvaluationUsers,
    Scorer,
    matrix_rankings,
    popularity_rankings,
    reranked,
    two_tower_rankings,
)
from ecrs.training.checkpoint import Checkpoint
from ecrs.training.data import EncodedData
from ecrs.training.deepfm import score_pairs
from ecrs.training.two_tower import item_vectors, user_vectors

KS = (10, 50, 100)
CANDIDATES = 200
POPULARITY = "popularity"
ITEM_KNN = "item KNN"
EASE = "EASE"
TWO_TOWER = "two-tower recall"
TWO_STAGE = "two-tower + DeepFM"
# Item-item baselines keep dense items x items matrices (800 MB each at
# 10,000 items), so larger catalogues are evaluated without them.
MAX_BASELINE_ITEMS = 10_000


class CheckpointScorer:
    """Score with a checkpoint's Paddle models."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self.scoring = checkpoint.scoring()

    def user_tower(self, rows: np.ndarray) -> np.ndarray:
        return user_vectors(self.checkpoint.two_tower, rows)

    def item_tower(self, rows: np.ndarray) -> np.ndarray:
        return item_vectors(self.checkpoint.two_tower, rows)

    def rank(self, user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        return score_pairs(self.checkpoint.deepfm, user_rows, item_rows)


@dataclass
class EvaluationReport:
    """Metrics per method, DeepFM's AUC and the evaluation's sizes."""

    methods: dict[str, dict[str, float]] = field(default_factory=dict)
    deepfm_auc: float = float("nan")
    users: int = 0
    heldout: int = 0
    ease_l2: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "methods": self.methods,
            "deepfm_auc": self.deepfm_auc,
            "users": self.users,
            "heldout_interactions": self.heldout,
            "ease_l2": self.ease_l2,
        }

    def format_table(self) -> str:
        names = list(next(iter(self.methods.values())).keys()) if self.methods else []
        width = max(len(method) for method in self.methods) if self.methods else 6
        header = "method".ljust(width) + "".join(f"{name:>12}" for name in names)
        lines = [header, "-" * len(header)]
        for method, values in self.methods.items():
            lines.append(
                method.ljust(width)
                + "".join(f"{values[name]:>12.4f}" for name in names)
            )
        if not np.isnan(self.deepfm_auc):
            lines.append(
                "DeepFM AUC (held-out positives vs sampled negatives): "
                f"{self.deepfm_auc:.4f}"
            )
        lines.append(f"{self.users} users, {self.heldout} held-out interactions")
        return "\n".join(lines)


def evaluate_scorer(
    scorer: Scorer,
    dataset: Dataset,
    data: EncodedData,
    heldout: pd.DataFrame,
    *,
    ks: tuple[int, ...] = KS,
    candidates: int = CANDIDATES,
    seed: int = 0,
    baselines: bool = False,
) -> EvaluationReport:
    """Evaluate every method on ``heldout`` with models trained on ``data``.

    With ``baselines``, item KNN and EASE (its ``l2`` tuned on a validation
    split of the training pairs) are evaluated too, on catalogues of up to
    ``MAX_BASELINE_ITEMS`` items.
    """
    spec = dataset.schema.interactions
    relevant = heldout.groupby(spec.user_id)[spec.item_id].agg(set).to_dict()
    user_index = data.user_position()
    positions = [user_index[user_id] for user_id in relevant]
    users = EvaluationUsers.from_pairs(data, positions)
    k_max = max(ks)
    recall_candidates = two_tower_rankings(scorer, data, users, max(k_max, candidates))
    report = EvaluationReport(users=len(relevant), heldout=len(heldout))
    rankings = {POPULARITY: popularity_rankings(data, users, k_max)}
    if baselines and len(data.item_ids) <= MAX_BASELINE_ITEMS:
        report.ease_l2, item_item = item_item_rankings(data, users, k_max)
        rankings.update(item_item)
    rankings |= {
        TWO_TOWER: {user: items[:k_max] for user, items in recall_candidates.items()},
        TWO_STAGE: reranked(
            scorer,
            data,
            users,
            {user: items[:candidates] for user, items in recall_candidates.items()},
            k_max,
        ),
    }
    for method, ranking in rankings.items():
        report.methods[method] = method_metrics(
            ranking, relevant, ks, len(data.item_ids)
        )
    report.deepfm_auc = deepfm_auc(scorer, data, heldout, spec, seed)
    return report


def item_item_rankings(
    data: EncodedData, users: EvaluationUsers, k: int
) -> tuple[float, dict[str, dict[str, list[str]]]]:
    """Rank with item KNN and with EASE; return EASE's tuned ``l2`` too."""
    matrix = interaction_matrix(data)
    l2 = tune_ease(data).l2
    return l2, {
        ITEM_KNN: matrix_rankings(data, users, matrix, item_knn_weights(matrix), k),
        EASE: matrix_rankings(data, users, matrix, ease_weights(matrix, l2), k),
    }


def method_metrics(
    rankings: dict[str, list[str]],
    relevant: dict[str, set[str]],
    ks: tuple[int, ...],
    num_items: int,
) -> dict[str, float]:
    values = {}
    for k in ks:
        values[f"recall@{k}"] = metrics.recall_at_k(rankings, relevant, k)
    for k in ks:
        values[f"ndcg@{k}"] = metrics.ndcg_at_k(rankings, relevant, k)
    values["coverage@10"] = metrics.catalogue_coverage(rankings, 10, num_items)
    return values


def deepfm_auc(
    scorer: Scorer, data: EncodedData, heldout: pd.DataFrame, spec: Any, seed: int
) -> float:
    """AUC of held-out positives against one uniform negative per positive.

    A sampled negative is redrawn when the user interacted with it in
    training or in the held-out part.
    """
    rng = np.random.default_rng(seed)
    user_index = data.user_position()
    item_index = data.item_position()
    users = heldout[spec.user_id].map(user_index).to_numpy(dtype=np.int64)
    positives = heldout[spec.item_id].map(item_index).to_numpy(dtype=np.int64)
    interacted = set(zip(data.pairs[:, 0].tolist(), data.pairs[:, 1].tolist()))
    interacted |= set(zip(users.tolist(), positives.tolist()))
    negatives = rng.integers(0, len(data.item_ids), size=len(users))
    for i in range(len(users)):
        while (int(users[i]), int(negatives[i])) in interacted:
            negatives[i] = rng.integers(0, len(data.item_ids))
    user_rows = data.user_rows[users]
    positive_scores = np.asarray(scorer.rank(user_rows, data.item_rows[positives]))
    negative_scores = np.asarray(scorer.rank(user_rows, data.item_rows[negatives]))
    return metrics.auc(positive_scores.reshape(-1), negative_scores.reshape(-1))
