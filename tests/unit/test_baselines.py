"""Item KNN, EASE and the validation split, on matrices small enough to check by hand."""

import numpy as np
import pytest

from ecrs.evaluation.baselines import (
    ease_weights,
    item_knn_weights,
    split_pairs,
)

# Three users, three items: user 0 has items 0 and 1, user 1 has 1 and 2,
# user 2 has item 0 only.
MATRIX = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 0]], dtype=np.float64)


def test_item_knn_is_cosine_with_zero_diagonal():
    weights = item_knn_weights(MATRIX)
    # Items 0 and 1 share one user; each has two users: 1 / (sqrt2 * sqrt2).
    assert weights[0, 1] == pytest.approx(0.5)
    # Items 0 and 2 share no user.
    assert weights[0, 2] == 0.0
    assert np.allclose(np.diag(weights), 0.0)
    assert np.allclose(weights, weights.T)


def test_item_knn_handles_an_item_without_users():
    matrix = np.hstack([MATRIX, np.zeros((3, 1))])
    weights = item_knn_weights(matrix)
    assert np.all(np.isfinite(weights))
    assert np.allclose(weights[3], 0.0)


def test_ease_matches_the_constrained_least_squares_solution():
    """Each column of B solves ridge regression of that item on the others."""
    l2 = 0.5
    weights = ease_weights(MATRIX, l2)
    assert np.allclose(np.diag(weights), 0.0)
    for item in range(3):
        others = [j for j in range(3) if j != item]
        features = MATRIX[:, others]
        expected = np.linalg.solve(
            features.T @ features + l2 * np.eye(2), features.T @ MATRIX[:, item]
        )
        assert np.allclose(weights[others, item], expected)


def test_ease_with_large_regularization_shrinks_to_zero():
    assert np.abs(ease_weights(MATRIX, 1e9)).max() < 1e-6


def test_split_pairs_holds_out_each_users_last_fifth():
    # User 0 has 10 pairs (2 held out), user 1 has 1 (held out), user 2 has 3
    # (round(0.6) = 1 held out).
    pairs = np.array(
        [[0, i] for i in range(10)] + [[1, 0]] + [[2, i] for i in range(3)]
    )
    kept, held = split_pairs(pairs, 0.2)
    assert held.tolist() == [[0, 8], [0, 9], [1, 0], [2, 2]]
    assert len(kept) + len(held) == len(pairs)
    assert [0, 7] in kept.tolist()
