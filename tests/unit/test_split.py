from __future__ import annotations

import time

import pandas as pd
import pytest

from ecrs.data.dataset import Dataset
from ecrs.data.generate import generate_shop_dataset
from ecrs.data.schema import DatasetSchema
from ecrs.data.split import temporal_split
from ecrs.errors import ConfigError

SCHEMA = DatasetSchema.from_dict(
    {
        "users": {"file": "users.csv", "id": "user_id"},
        "items": {"file": "items.csv", "id": "item_id"},
        "interactions": {"file": "interactions.csv"},
    }
)


def dataset_of(rows: list[tuple[str, str, int]]) -> Dataset:
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    interactions.insert(2, "event", "browse")
    users = pd.DataFrame({"user_id": sorted(set(interactions["user_id"]))})
    items = pd.DataFrame({"item_id": sorted(set(interactions["item_id"]))})
    return Dataset(SCHEMA, users, items, interactions)


def pairs(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return list(zip(frame["user_id"], frame["item_id"]))


def test_split_holds_out_latest_share():
    # u1 has 10 interactions, so round(0.2 * 10) = 2 are held out. u2 has 3,
    # and round(0.6) = 1. u3 has one, which is held out.
    rows = [("u1", f"i{t}", t) for t in range(10)]
    rows += [("u2", "a", 5), ("u2", "b", 3), ("u2", "c", 9)]
    rows += [("u3", "a", 1)]
    dataset = dataset_of(rows)

    train, heldout = temporal_split(dataset, holdout_share=0.2)

    expected = [("u1", "i8"), ("u1", "i9"), ("u2", "c"), ("u3", "a")]
    assert sorted(pairs(heldout)) == expected
    assert len(train) == 10
    assert "u3" not in set(train["user_id"])


def test_split_ties_by_item_id_as_string():
    # All at the same time: string order puts "i10" before "i9".
    rows = [("u1", "i9", 100), ("u1", "i10", 100), ("u1", "i2", 100), ("u1", "a", 50)]
    dataset = dataset_of(rows)

    train, heldout = temporal_split(dataset, holdout_share=0.5)

    assert pairs(heldout) == [("u1", "i9"), ("u1", "i2")]
    assert pairs(train) == [("u1", "i10"), ("u1", "a")]


def test_split_holds_out_at_least_one():
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u2", "c", 1)]

    train, heldout = temporal_split(dataset_of(rows), holdout_share=0.0)

    assert pairs(heldout) == [("u1", "b"), ("u2", "c")]
    assert pairs(train) == [("u1", "a")]


def test_split_keeps_row_order_and_columns():
    rows = [
        ("u2", "x", 7),
        ("u1", "a", 3),
        ("u2", "y", 1),
        ("u1", "b", 1),
        ("u2", "z", 4),
    ]
    dataset = dataset_of(rows)

    train, heldout = temporal_split(dataset, holdout_share=0.34)

    assert pairs(train) == [("u2", "y"), ("u1", "b"), ("u2", "z")]
    assert pairs(heldout) == [("u2", "x"), ("u1", "a")]
    assert list(train.columns) == list(dataset.interactions.columns)
    assert list(heldout.index) == [0, 1]


def test_split_rounds_half_to_even():
    # 0.5 * 5 = 2.5 rounds to 2, and 0.5 * 3 = 1.5 rounds to 2.
    rows = [("u1", f"i{t}", t) for t in range(5)]
    rows += [("u2", f"i{t}", t) for t in range(3)]

    _, heldout = temporal_split(dataset_of(rows), holdout_share=0.5)

    assert heldout["user_id"].value_counts().to_dict() == {"u1": 2, "u2": 2}


def test_split_default_dataset_fast_and_complete():
    dataset = generate_shop_dataset()

    started = time.perf_counter()
    train, heldout = temporal_split(dataset)
    elapsed = time.perf_counter() - started

    assert len(train) + len(heldout) == len(dataset.interactions)
    assert heldout["user_id"].nunique() == dataset.interactions["user_id"].nunique()
    assert elapsed < 2.0
    latest_train = train.groupby("user_id")["timestamp"].max()
    earliest_heldout = heldout.groupby("user_id")["timestamp"].min()
    common = latest_train.index
    assert (latest_train <= earliest_heldout[common]).all()


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_split_invalid_share_raises(share):
    with pytest.raises(ConfigError, match=f"holdout_share is {share}"):
        temporal_split(dataset_of([("u1", "a", 1)]), holdout_share=share)
