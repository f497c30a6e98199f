"""Rank the catalogue for every evaluated user with each method.

Each function returns ``{user_id: [item_id, ...]}``, best first, with the
user's training items left out. Scoring runs through a ``Scorer`` so the same
code evaluates a Paddle checkpoint and an exported ONNX version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ecrs.serving.scoring import Scoring
from ecrs.training.data import EncodedData

USER_CHUNK = 256


class Scorer(Protocol):
    scoring: Scoring

    def user_tower(self, rows: np.ndarray) -> np.ndarray: ...

    def item_tower(self, rows: np.ndarray) -> np.ndarray: ...

    def rank(self, user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class EvaluationUsers:
    """Users to evaluate, by position in ``EncodedData``, with their train items."""

    positions: np.ndarray
    seen: list[np.ndarray]

    @classmethod
    def from_pairs(cls, data: EncodedData, positions: Sequence[int]) -> EvaluationUsers:
        by_user: dict[int, list[int]] = {}
        for user, item in data.pairs:
            by_user.setdefault(int(user), []).append(int(item))
        seen = [np.asarray(by_user.get(int(p), []), dtype=np.int64) for p in positions]
        return cls(np.asarray(positions, dtype=np.int64), seen)


def popularity_rankings(
    data: EncodedData, users: EvaluationUsers, k: int
) -> dict[str, list[str]]:
    counts = data.item_counts.astype(np.float64)
    # Ties broken by item position, which follows the items table order.
    scores = np.broadcast_to(counts, (len(users.positions), len(counts))).copy()
    return _top_k(data, users, scores, 0, k)


def two_tower_rankings(
    scorer: Scorer, data: EncodedData, users: EvaluationUsers, k: int
) -> dict[str, list[str]]:
    item_vectors = scorer.item_tower(data.item_rows)
    rankings: dict[str, list[str]] = {}
    for start in range(0, len(users.positions), USER_CHUNK):
        chunk = users.positions[start : start + USER_CHUNK]
        scores = scorer.user_tower(data.user_rows[chunk]) @ item_vectors.T
        rankings.update(_top_k(data, users, scores, start, k))
    return rankings


def matrix_rankings(
    data: EncodedData,
    users: EvaluationUsers,
    matrix: np.ndarray,
    weights: np.ndarray,
    k: int,
) -> dict[str, list[str]]:
    """Rank by ``matrix[user] @ weights``, an item-item model such as EASE."""
    rankings: dict[str, list[str]] = {}
    for start in range(0, len(users.positions), USER_CHUNK):
        chunk = users.positions[start : start + USER_CHUNK]
        rankings.update(_top_k(data, users, matrix[chunk] @ weights, start, k))
    return rankings


def reranked(
    scorer: Scorer,
    data: EncodedData,
    users: EvaluationUsers,
    candidates: dict[str, list[str]],
    k: int,
) -> dict[str, list[str]]:
    """Re-rank each user's recall candidates as served: ``scorer.scoring``
    blends the ranker's probability with the recall similarity."""
    item_index = data.item_position()
    user_index = data.user_position()
    item_vectors = scorer.item_tower(data.item_rows)
    user_vectors = scorer.user_tower(data.user_rows[users.positions])
    vector_row = {data.user_ids[p]: row for row, p in enumerate(users.positions)}
    rankings = {}
    for user_id, items in candidates.items():
        if not items:
            rankings[user_id] = []
            continue
        positions = [item_index[item] for item in items]
        item_rows = data.item_rows[positions]
        user_rows = np.repeat(data.user_rows[[user_index[user_id]]], len(items), axis=0)
        probabilities = np.asarray(scorer.rank(user_rows, item_rows)).reshape(-1)
        similarities = item_vectors[positions] @ user_vectors[vector_row[user_id]]
        scores = scorer.scoring.blend(probabilities, similarities)
        order = np.argsort(-scores, kind="stable")[:k]
        rankings[user_id] = [items[i] for i in order]
    return rankings


def _top_k(
    data: EncodedData,
    users: EvaluationUsers,
    scores: np.ndarray,
    offset: int,
    k: int,
) -> dict[str, list[str]]:
    """Mask each user's training items, then take the ``k`` best per row."""
    scores = np.asarray(scores, dtype=np.float64)
    rankings = {}
    for row in range(scores.shape[0]):
        seen = users.seen[offset + row]
        if len(seen):
            scores[row, seen] = -np.inf
        limit = min(k, scores.shape[1])
        best = np.argpartition(-scores[row], limit - 1)[:limit]
        best = best[np.lexsort((best, -scores[row, best]))]
        best = best[np.isfinite(scores[row, best])]
        user_id = data.user_ids[users.positions[offset + row]]
        rankings[user_id] = [data.item_ids[i] for i in best]
    return rankings
