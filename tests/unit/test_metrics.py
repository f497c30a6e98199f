from __future__ import annotations

import math

import pandas as pd
import pytest

from ecrs.errors import ConfigError, DataError
from ecrs.evaluation.metrics import (
    auc,
    catalogue_coverage,
    exclude_seen,
    items_by_user,
    ndcg_at_k,
    popularity_ranking,
    recall_at_k,
)

# u1 finds b (position 1) of {b, d, e} in its top 3. u2 finds nothing, u4 has
# no ranking, u5 has no relevant item and u3 is not evaluated.
RANKED = {"u1": ["a", "b", "c", "d"], "u2": ["x", "y", "z"], "u3": ["a"]}
RELEVANT = {"u1": {"b", "d", "e"}, "u2": {"q"}, "u4": {"a"}, "u5": set()}


def test_recall_hand_computed():
    assert recall_at_k(RANKED, RELEVANT, 3) == pytest.approx((1 / 3) / 3)


def test_recall_grows_with_k():
    assert recall_at_k(RANKED, RELEVANT, 4) == pytest.approx((2 / 3) / 3)


def test_ndcg_hand_computed():
    user1 = (1 / math.log2(3)) / (1 + 1 / math.log2(3) + 1 / math.log2(4))

    assert ndcg_at_k(RANKED, RELEVANT, 3) == pytest.approx(user1 / 3)


def test_ndcg_single_hit_at_second_position():
    expected = 1 / math.log2(3)

    assert ndcg_at_k({"u": ["x", "a"]}, {"u": {"a"}}, 2) == pytest.approx(expected)


def test_ndcg_ideal_capped_at_k():
    assert ndcg_at_k({"u": ["a", "b"]}, {"u": {"a", "b", "c"}}, 2) == pytest.approx(1.0)


def test_metrics_count_duplicate_once():
    ranked = {"u": ["a", "a", "b"]}
    relevant = {"u": {"a", "b"}}
    ideal = 1 + 1 / math.log2(3)

    found = 1 + 1 / math.log2(4)

    assert ndcg_at_k(ranked, relevant, 3) == pytest.approx(found / ideal)
    assert recall_at_k({"u": ["a", "a"]}, relevant, 2) == pytest.approx(0.5)


def test_metrics_without_relevant_users_raise():
    with pytest.raises(DataError, match="no user has a relevant item"):
        recall_at_k(RANKED, {"u1": set()}, 5)
    with pytest.raises(DataError, match="no user has a relevant item"):
        ndcg_at_k(RANKED, {}, 5)


@pytest.mark.parametrize("metric", [recall_at_k, ndcg_at_k])
def test_metrics_invalid_k_raises(metric):
    with pytest.raises(ConfigError, match="k is 0"):
        metric(RANKED, RELEVANT, 0)


@pytest.mark.parametrize(
    ("positives", "negatives", "expected"),
    [
        ([3.0, 2.0], [1.0, 2.0], 3.5 / 4),
        ([1.0, 1.0], [1.0], 0.5),
        ([5.0], [1.0, 2.0, 3.0], 1.0),
        ([0.0], [1.0, 2.0], 0.0),
        ([0.9, 0.1, 0.5], [0.2, 0.6], 3 / 6),
    ],
)
def test_auc_hand_computed(positives, negatives, expected):
    assert auc(positives, negatives) == pytest.approx(expected)


def test_auc_empty_side_raises():
    with pytest.raises(DataError, match="0 positive and 2 negative"):
        auc([], [1.0, 2.0])


def test_auc_nan_raises():
    with pytest.raises(DataError, match="NaN"):
        auc([float("nan")], [1.0])


def test_coverage_counts_distinct_top_k():
    ranked = {"u1": ["a", "b", "c"], "u2": ["b", "d"]}

    assert catalogue_coverage(ranked, 2, 10) == pytest.approx(0.3)
    assert catalogue_coverage(ranked, 3, 4) == pytest.approx(1.0)


def test_coverage_empty_catalogue_raises():
    with pytest.raises(ConfigError, match="num_items is 0"):
        catalogue_coverage({}, 5, 0)


def test_popularity_ranking_ties_by_id():
    train = pd.DataFrame({"item_id": ["b", "b", "c", "a", "c", "z"]})

    assert popularity_ranking(train, ["a", "b", "c", "d"]) == ["b", "c", "a", "d"]


def test_popularity_ranking_custom_column():
    train = pd.DataFrame({"movie": ["2", "1", "2"]})

    assert popularity_ranking(train, ["1", "2"], item_column="movie") == ["2", "1"]
    with pytest.raises(DataError, match="no column 'item_id'"):
        popularity_ranking(train, ["1"])


def test_exclude_seen_keeps_order():
    ranked = {"u1": ["a", "b", "c", "d"], "u2": ["a", "b"]}
    seen = {"u1": {"b"}}

    assert exclude_seen(ranked, seen) == {"u1": ["a", "c", "d"], "u2": ["a", "b"]}
    assert exclude_seen(ranked, seen, k=2) == {"u1": ["a", "c"], "u2": ["a", "b"]}


def test_exclude_seen_shared_popular_list():
    popular = ["a", "b", "c", "d"]
    ranked = dict.fromkeys(["u1", "u2"], popular)

    result = exclude_seen(ranked, {"u1": {"a", "c"}, "u2": {"d"}}, k=2)

    assert result == {"u1": ["b", "d"], "u2": ["a", "b"]}
    assert popular == ["a", "b", "c", "d"]


def test_items_by_user_collects_sets():
    frame = pd.DataFrame(
        {"user_id": ["u1", "u2", "u1", "u1"], "item_id": ["a", "b", "c", "a"]}
    )

    assert items_by_user(frame) == {"u1": {"a", "c"}, "u2": {"b"}}
