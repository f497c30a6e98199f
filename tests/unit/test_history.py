"""Recent-item histories: per training pair and per user, without leaking the target."""

import numpy as np

from ecrs.data.schema import DatasetSchema
from ecrs.errors import DataError
from ecrs.features.encoder import RECENT_ITEMS, FeatureEncoder
from ecrs.training.data import histories

import pytest


def test_pair_history_is_earlier_items():
    # User 0 interacts with items 5, 6, 7 in that order; user 1 with item 8.
    pairs = np.array([[0, 0], [0, 1], [0, 2], [1, 3]])
    codes = np.array([5, 6, 7, 8])
    before, latest = histories(pairs, codes, 2, num_users=3)
    assert before.tolist() == [[0, 0], [5, 0], [6, 5], [0, 0]]
    assert latest.tolist() == [[7, 6], [8, 0], [0, 0]]


def test_repeated_items_count_once_at_their_latest_position():
    # User 0 interacts with items 5, 6, 5, 7 in that order.
    pairs = np.array([[0, 0], [0, 1], [0, 0], [0, 2]])
    codes = np.array([5, 6, 7])
    before, latest = histories(pairs, codes, 3, num_users=1)
    assert before.tolist() == [[0, 0, 0], [5, 0, 0], [6, 5, 0], [5, 6, 0]]
    assert latest.tolist() == [[7, 5, 6]]


def test_history_never_holds_the_pairs_own_item():
    rng = np.random.default_rng(0)
    users = np.sort(rng.integers(0, 5, size=50))
    pairs = np.stack([users, np.arange(50)], axis=1)
    codes = np.arange(50) + 2
    before, _ = histories(pairs, codes, 4, num_users=5)
    for row, (_, item) in enumerate(pairs):
        assert codes[item] not in before[row]


SCHEMA = {
    "name": "toy",
    "users": {"file": "u.csv", "id": "user_id", "features": ["age"]},
    "items": {"file": "i.csv", "id": "item_id"},
    "interactions": {"file": "x.csv"},
}


def test_encoder_reserves_the_recent_items_name():
    schema = dict(SCHEMA, users={**SCHEMA["users"], "features": [RECENT_ITEMS]})
    with pytest.raises(DataError, match=RECENT_ITEMS):
        FeatureEncoder.fit(
            DatasetSchema.from_dict(schema), users=[], items=[],
            trained_user_ids=[], trained_item_ids=[], history_length=3,
        )  # fmt: skip


def test_recent_items_round_trip():
    encoder = FeatureEncoder.fit(
        DatasetSchema.from_dict(SCHEMA),
        users=[{"age": "30"}],
        items=[{}, {}],
        trained_user_ids=["u1"],
        trained_item_ids=["a", "b"],
        history_length=3,
    )
    loaded = FeatureEncoder.from_dict(encoder.to_dict())
    assert loaded.users.history_length == 3
    assert loaded.users.feature_names == ["age"]
    row = loaded.encode_users(["u1"], [{"age": "30", RECENT_ITEMS: ["b", "zzz"]}])[0]
    assert list(row[-3:]) == [*loaded.users.history_ids(["b", "zzz"]), 0]
    # An unknown recent item is not reported as an unknown user feature.
    assert loaded.users.unknown_features(row) == []


def test_single_slot_history_reads_a_list():
    encoder = FeatureEncoder.fit(
        DatasetSchema.from_dict(SCHEMA),
        users=[{"age": "30"}],
        items=[{}, {}],
        trained_user_ids=["u1"],
        trained_item_ids=["a", "b"],
        history_length=1,
    )
    row = encoder.encode_users(["u1"], [{"age": "30", RECENT_ITEMS: ["b", "a"]}])[0]
    assert list(row[-1:]) == encoder.users.history_ids(["b"])
