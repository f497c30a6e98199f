"""Offline ranking metrics and the popularity baseline.

Rankings are ``{user_id: [item_id, ...]}`` with the best item first, and
relevance is ``{user_id: {item_id, ...}}``, usually each user's held-out
items. ``recall_at_k`` and ``ndcg_at_k`` average over the users with at least
one relevant item. Such a user without a ranking counts as a miss, and a
ranked user without relevant items is left out. An item that a ranking lists
twice counts once, at its first position.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ecrs.errors import ConfigError, DataError

Rankings = Mapping[str, Sequence[str]]
ItemSets = Mapping[str, Collection[str]]


def recall_at_k(ranked: Rankings, relevant: ItemSets, k: int) -> float:
    """Return the mean share of each user's relevant items found in their top ``k``.

    The share's denominator is the user's number of relevant items, so a user
    with more than ``k`` of them cannot reach 1.
    """
    _check_k(k)

    def recall(user: str, items: Collection[str]) -> float:
        hits = set(ranked.get(user, ())[:k]) & set(items)
        return len(hits) / len(items)

    return _mean_over_users(relevant, recall)


def ndcg_at_k(ranked: Rankings, relevant: ItemSets, k: int) -> float:
    """Return the mean normalized discounted cumulative gain at ``k``.

    Gains are 0 or 1, and a hit at 0-based position ``i`` adds
    ``1 / log2(i + 2)``. The ideal ranking puts ``min(len(relevant), k)``
    hits first.
    """
    _check_k(k)

    def ndcg(user: str, items: Collection[str]) -> float:
        ideal = sum(_discount(i) for i in range(min(len(items), k)))
        return _dcg(ranked.get(user, ())[:k], items) / ideal

    return _mean_over_users(relevant, ndcg)


def auc(positive_scores: Iterable[float], negative_scores: Iterable[float]) -> float:
    """Return the probability that a positive scores above a negative (ROC AUC).

    Computed as the Mann-Whitney U statistic over all pairs, where a tie
    counts half.
    """
    positives = np.asarray(list(positive_scores), dtype=np.float64)
    negatives = np.asarray(list(negative_scores), dtype=np.float64)
    if positives.size == 0 or negatives.size == 0:
        raise DataError(
            f"auc got {positives.size} positive and {negatives.size} negative "
            "scores; it needs at least one of each"
        )
    scores = np.concatenate([positives, negatives])
    if np.isnan(scores).any():
        raise DataError("auc got a NaN score; check the model output for NaN")

    # Average ranks, 1-based: tied scores share the mean of their ranks.
    _, group, group_sizes = np.unique(scores, return_inverse=True, return_counts=True)
    group_ends = np.cumsum(group_sizes)
    ranks = (group_ends - (group_sizes - 1) / 2)[group]

    rank_sum = ranks[: positives.size].sum()
    u_statistic = rank_sum - positives.size * (positives.size + 1) / 2
    return float(u_statistic / (positives.size * negatives.size))


def catalogue_coverage(ranked: Rankings, k: int, num_items: int) -> float:
    """Return the share of the ``num_items`` catalogue items in any top ``k``."""
    _check_k(k)
    if num_items < 1:
        raise ConfigError(
            f"num_items is {num_items}; the catalogue needs 1 or more items"
        )
    recommended: set[str] = set()
    for items in ranked.values():
        recommended.update(items[:k])
    return len(recommended) / num_items


def popularity_ranking(
    train: pd.DataFrame, item_ids: Iterable[str], *, item_column: str = "item_id"
) -> list[str]:
    """Rank ``item_ids`` by their number of rows in ``train``, most first.

    Ties, including the items absent from ``train``, go by item id. Items of
    ``train`` that are not in ``item_ids`` are not ranked.
    """
    if item_column not in train.columns:
        raise DataError(
            f"the train frame has no column {item_column!r} (its columns are "
            f"{list(train.columns)}); pass the item id column as item_column"
        )
    counts = train[item_column].value_counts().to_dict()
    return sorted(set(item_ids), key=lambda item: (-counts.get(item, 0), item))


def exclude_seen(
    ranked: Rankings, seen: ItemSets, *, k: int | None = None
) -> dict[str, list[str]]:
    """Return each user's ranking without their ``seen`` items, in the same order.

    With ``k``, each list stops at ``k`` items, and a ranking is read only as
    far as needed. So the same popularity list can be passed for every user
    cheaply, as ``dict.fromkeys(users, popular)``.
    """
    if k is not None:
        _check_k(k)
    result = {}
    for user, items in ranked.items():
        user_seen = seen.get(user, ())
        unseen: list[str] = []
        for item in items:
            if k is not None and len(unseen) == k:
                break
            if item not in user_seen:
                unseen.append(item)
        result[user] = unseen
    return result


def items_by_user(
    interactions: pd.DataFrame,
    *,
    user_column: str = "user_id",
    item_column: str = "item_id",
) -> dict[str, set[str]]:
    """Collect the set of items each user interacted with."""
    groups = interactions.groupby(user_column, sort=False)[item_column]
    return {user: set(items) for user, items in groups}


def _check_k(k: int) -> None:
    if k < 1:
        raise ConfigError(f"k is {k}; set it to 1 or more")


def _mean_over_users(
    relevant: ItemSets, metric: Callable[[str, Collection[str]], float]
) -> float:
    """Average ``metric(user, items)`` over the users with relevant items."""
    values = [metric(user, items) for user, items in relevant.items() if items]
    if not values:
        raise DataError(
            "no user has a relevant item, so the metric is undefined; "
            "check that the held-out interactions are not empty"
        )
    return sum(values) / len(values)


def _discount(position: int) -> float:
    return 1.0 / math.log2(position + 2)


def _dcg(items: Sequence[str], relevant: Collection[str]) -> float:
    """Sum the discounts of the hits in ``items``, counting each item once."""
    total, counted = 0.0, set()
    for position, item in enumerate(items):
        if item in relevant and item not in counted:
            counted.add(item)
            total += _discount(position)
    return total
