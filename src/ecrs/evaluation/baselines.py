"""Reference baselines over the training interactions: item KNN and EASE.

Both score a user's unseen items from the binary user-item matrix ``X`` of
the training pairs, with an item-item matrix ``B``: a user's scores are their
row of ``X`` times ``B``.

- Item KNN: ``B`` is the cosine similarity of the items' columns of ``X``,
  over all items (no neighbour limit), with a zero diagonal.
- EASE (H. Steck, "Embarrassingly Shallow Autoencoders for Sparse Data",
  WWW 2019): ``B`` minimizes ``|X - XB|^2 + l2 |B|^2`` with a zero
  diagonal, in closed form from ``P = (X^T X + l2 I)^-1`` as
  ``B = -P / diag(P)``. ``tune_ease`` picks ``l2`` on a validation split
  carved from the training pairs.

Each keeps dense ``items x items`` float64 matrices (800 MB each at 10,000
items), so they suit catalogues the size of MovieLens 100K's 1,682 items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ecrs.evaluation import metrics
from ecrs.evaluation.rankings import EvaluationUsers, matrix_rankings
from ecrs.training.data import EncodedData

EASE_L2_GRID = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)
VALIDATION_SHARE = 0.2
TUNING_K = 10


def interaction_matrix(data: EncodedData) -> np.ndarray:
    """Binary ``users x items`` matrix of the training pairs, as float64."""
    matrix = np.zeros((len(data.user_ids), len(data.item_ids)), dtype=np.float64)
    matrix[data.pairs[:, 0], data.pairs[:, 1]] = 1.0
    return matrix


def item_knn_weights(matrix: np.ndarray) -> np.ndarray:
    """Cosine similarity between item columns, with a zero diagonal."""
    norms = np.sqrt(matrix.sum(axis=0))
    norms[norms == 0] = 1.0
    gram = matrix.T @ matrix
    similarity = gram / norms[:, None] / norms[None, :]
    np.fill_diagonal(similarity, 0.0)
    return similarity


def ease_weights(matrix: np.ndarray, l2: float) -> np.ndarray:
    """EASE's item-item weights for regularization ``l2``."""
    gram = matrix.T @ matrix
    gram[np.diag_indices_from(gram)] += l2
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights


@dataclass(frozen=True)
class EaseTuning:
    """The chosen ``l2`` and the validation NDCG@10 of every candidate."""

    l2: float
    validation_ndcg: dict[float, float]


def tune_ease(data: EncodedData, grid: Sequence[float] = EASE_L2_GRID) -> EaseTuning:
    """Choose EASE's ``l2`` by NDCG@10 on the last training pairs of each user.

    The validation pairs follow the evaluation's own rule: per user, the
    last ``max(1, round(0.2 * n))`` of their ``n`` training pairs in time.
    """
    fit, validation = split_pairs(data.pairs, VALIDATION_SHARE)
    fit_data = replace(data, pairs=fit, pair_history=None)
    relevant: dict[str, set[str]] = {}
    for user, item in validation:
        relevant.setdefault(data.user_ids[user], set()).add(data.item_ids[item])
    user_index = data.user_position()
    users = EvaluationUsers.from_pairs(fit_data, [user_index[u] for u in relevant])
    matrix = interaction_matrix(fit_data)
    scores = {}
    for l2 in grid:
        weights = ease_weights(matrix, l2)
        ranked = matrix_rankings(fit_data, users, matrix, weights, TUNING_K)
        scores[float(l2)] = metrics.ndcg_at_k(ranked, relevant, TUNING_K)
    best = max(scores, key=lambda l2: (scores[l2], -l2))
    return EaseTuning(best, scores)


def split_pairs(pairs: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
    """Hold out each user's last ``max(1, round(share * n))`` pairs.

    ``pairs`` must be ordered by user, then time, as ``EncodedData`` keeps
    them. Returns (kept, held out).
    """
    users = pairs[:, 0]
    starts = np.r_[0, np.flatnonzero(users[1:] != users[:-1]) + 1]
    sizes = np.diff(np.r_[starts, len(pairs)])
    held = np.maximum(1, np.round(share * sizes)).astype(np.int64)
    position = np.arange(len(pairs)) - np.repeat(starts, sizes)
    is_held = position >= np.repeat(sizes - held, sizes)
    return pairs[~is_held], pairs[is_held]
