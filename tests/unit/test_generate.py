from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from ecrs.data.dataset import Dataset
from ecrs.data.generate import generate_shop_dataset
from ecrs.data.split import temporal_split
from ecrs.errors import ConfigError

SMALL = {"num_users": 300, "num_items": 400, "num_interactions": 6_000}


@pytest.fixture(scope="module")
def default_dataset() -> Dataset:
    return generate_shop_dataset(seed=1)


def test_generate_same_seed_equal_frames():
    first = generate_shop_dataset(**SMALL, seed=7)
    second = generate_shop_dataset(**SMALL, seed=7)

    pd.testing.assert_frame_equal(first.users, second.users)
    pd.testing.assert_frame_equal(first.items, second.items)
    pd.testing.assert_frame_equal(first.interactions, second.interactions)


def test_generate_different_seed_differs():
    first = generate_shop_dataset(**SMALL, seed=7)
    second = generate_shop_dataset(**SMALL, seed=8)

    assert not first.users.equals(second.users)
    assert not first.items.equals(second.items)
    assert not first.interactions.equals(second.interactions)


@pytest.mark.parametrize(
    ("num_users", "num_items", "num_interactions"),
    [(1, 1, 1), (5, 3, 0), (40, 25, 17), (300, 400, 6_000)],
)
def test_generate_sizes_follow_arguments(num_users, num_items, num_interactions):
    dataset = generate_shop_dataset(
        num_users=num_users, num_items=num_items, num_interactions=num_interactions
    )

    assert len(dataset.users) == num_users
    assert len(dataset.items) == num_items
    assert len(dataset.interactions) == num_interactions


def test_generate_default_sizes_and_speed():
    started = time.perf_counter()
    dataset = generate_shop_dataset()
    elapsed = time.perf_counter() - started

    assert len(dataset.users) == 6_000
    assert len(dataset.items) == 3_000
    assert len(dataset.interactions) == 150_000
    assert elapsed < 10.0


def test_generate_ids_and_columns(default_dataset):
    schema = default_dataset.schema

    assert schema.name == "shop"
    assert default_dataset.user_ids[:2] == ["u000000", "u000001"]
    assert default_dataset.item_ids[:2] == ["sku00000", "sku00001"]
    user_columns = [schema.users.id, *schema.users.stored_columns]
    item_columns = [schema.items.id, *schema.items.stored_columns]
    assert list(default_dataset.users.columns) == user_columns
    assert list(default_dataset.items.columns) == item_columns
    assert schema.items.attributes == ("title",)
    assert default_dataset.users["age"].map(type).eq(str).all()


def test_generate_saves_and_loads(tmp_path):
    dataset = generate_shop_dataset(**SMALL)

    dataset.save(tmp_path)
    loaded = Dataset.load(tmp_path)

    pd.testing.assert_frame_equal(loaded.interactions, dataset.interactions)
    pd.testing.assert_frame_equal(loaded.users, dataset.users)


def test_generate_title_names_brand_and_category(default_dataset):
    items = default_dataset.items
    for item in items.head(50).itertuples():
        assert item.title.startswith(f"{item.brand} {item.category} #")


def test_generate_places_nest(default_dataset):
    users = default_dataset.users

    assert users.groupby("city")["province"].nunique().max() == 1
    assert users.groupby("county")["city"].nunique().max() == 1
    assert users.groupby("city")["city_level"].nunique().max() == 1
    assert users["province"].nunique() > 5
    assert set(users["city_level"]) <= {"1", "2", "3", "4", "5"}


def test_generate_catalogue_clusters(default_dataset):
    items = default_dataset.items
    categories_per_brand = items.groupby("brand")["category"].nunique()
    brands_per_shop = items.groupby("shop_id")["brand"].nunique()

    assert categories_per_brand.max() <= 3
    assert categories_per_brand.mean() < 2.5
    assert brands_per_shop.mean() < 4
    assert items["category"].nunique() >= 20


def test_generate_events_and_timestamps(default_dataset):
    interactions = default_dataset.interactions
    counts = interactions["event"].value_counts()
    timestamps = interactions["timestamp"]

    assert set(counts.index) == {"browse", "cart", "order"}
    assert counts["browse"] > counts["cart"] > counts["order"]
    assert timestamps.dtype == "int64"
    assert timestamps.is_monotonic_increasing
    assert 55 * 86_400 < timestamps.max() - timestamps.min() < 62 * 86_400
    assert interactions["user_id"].nunique() == 6_000


@pytest.mark.parametrize(("earlier", "later"), [("browse", "cart"), ("cart", "order")])
def test_generate_event_follows_earlier(default_dataset, earlier, later):
    interactions = default_dataset.interactions
    first_time = (
        interactions[interactions["event"] == earlier]
        .groupby(["user_id", "item_id"])["timestamp"]
        .min()
    )
    followers = interactions[interactions["event"] == later]
    keys = pd.MultiIndex.from_frame(followers[["user_id", "item_id"]])
    earlier_times = first_time.reindex(keys).to_numpy()

    assert len(followers) > 0
    assert not np.isnan(earlier_times).any()
    assert (followers["timestamp"].to_numpy() > earlier_times).all()


def test_generate_popularity_is_skewed(default_dataset):
    counts = default_dataset.interactions["item_id"].value_counts()
    top_share = counts.iloc[: len(counts) // 100].sum() / counts.sum()

    # Under a uniform choice the top 1% of items would take about 1%.
    assert top_share > 0.15


def test_generate_heldout_categories_follow_train(default_dataset):
    train, heldout = temporal_split(default_dataset)
    items = default_dataset.items
    category = dict(zip(items["item_id"], items["category"]))
    train_categories = train.assign(category=train["item_id"].map(category))
    user_categories = train_categories.groupby("user_id")["category"].agg(set)
    category_share = train_categories["category"].value_counts(normalize=True)

    in_train = [
        category[item] in user_categories.get(user, set())
        for user, item in zip(heldout["user_id"], heldout["item_id"])
    ]
    # The chance that an interaction drawn from the overall category mix falls
    # in the categories the user had in train.
    chance = [
        category_share[list(user_categories.get(user, []))].sum()
        for user in heldout["user_id"]
    ]

    assert np.mean(in_train) > 1.5 * np.mean(chance)


def test_generate_features_shift_categories(default_dataset):
    interactions = default_dataset.interactions.merge(
        default_dataset.items[["item_id", "category"]]
    ).merge(default_dataset.users[["user_id", "sex", "age"]])
    overall = interactions["category"].value_counts(normalize=True)

    for feature in ("sex", "age"):
        mix = pd.crosstab(
            interactions[feature], interactions["category"], normalize="index"
        )
        distance = (mix - overall[mix.columns]).abs().sum(axis=1) / 2
        # Random halves of the users differ by about 0.02 in total variation.
        assert distance.min() > 0.1, feature


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"num_users": 0}, "num_users is 0"),
        ({"num_items": -1}, "num_items is -1"),
        ({"num_interactions": -5}, "num_interactions is -5"),
    ],
)
def test_generate_invalid_size_raises(arguments, message):
    with pytest.raises(ConfigError, match=message):
        generate_shop_dataset(**arguments)
