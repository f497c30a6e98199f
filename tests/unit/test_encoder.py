import json
import subprocess
import sys

import numpy as np
import pytest

from ecrs.data.schema import DatasetSchema
from ecrs.features.encoder import MISSING_ID, OOV_ID, FeatureEncoder

SCHEMA = DatasetSchema.from_dict(
    {
        "name": "toy",
        "users": {"file": "users.csv", "id": "user_id", "features": ["age", "sex"]},
        "items": {
            "file": "items.csv",
            "id": "item_id",
            "features": [
                "brand",
                {
                    "name": "tags",
                    "multi_valued": True,
                    "separator": "|",
                    "max_values": 2,
                },
            ],
        },
        "interactions": {"file": "interactions.csv"},
    }
)
USERS = [
    {"age": "18-24", "sex": "f"},
    {"age": "25-34", "sex": "m"},
    {"age": "25-34", "sex": "f"},
]
ITEMS = [{"brand": "acme", "tags": "red|big"}, {"brand": "zeta", "tags": "big"}]


def fit() -> FeatureEncoder:
    return FeatureEncoder.fit(
        SCHEMA,
        users=USERS,
        items=ITEMS,
        trained_user_ids=["u2", "u1"],
        trained_item_ids=["i1", "i2"],
    )


def test_vocabulary_orders_by_frequency_then_value():
    encoder = fit()
    age = encoder.users.fields[1]
    assert age.vocabulary == ("25-34", "18-24")
    assert encoder.users.fields[0].vocabulary == ("u1", "u2")


def test_unseen_values_map_to_oov_id():
    rows = fit().encode_users(["u9"], [{"age": "99+", "sex": "f"}])
    assert rows[0, 0] == OOV_ID
    assert rows[0, 1] == OOV_ID
    assert rows[0, 2] != OOV_ID


def test_unknown_features_names_oov_fields():
    encoder = fit()
    rows = encoder.encode_users(["u9"], [{"age": "99+", "sex": "f"}])
    assert encoder.users.unknown_features(rows[0]) == ["age"]


def test_unknown_features_ignores_missing_and_known():
    encoder = fit()
    rows = encoder.encode_users(["u1"], [{"sex": "m"}])
    assert encoder.users.unknown_features(rows[0]) == []


def test_unknown_features_checks_every_slot():
    encoder = fit()
    rows = encoder.encode_items(["i1"], [{"brand": "acme", "tags": "red|new"}])
    assert encoder.items.unknown_features(rows[0]) == ["tags"]


def test_missing_values_map_to_missing_id():
    rows = fit().encode_users(["u1"], [{"age": None}])
    assert rows[0, 1] == MISSING_ID
    assert rows[0, 2] == MISSING_ID


def test_multi_valued_feature_fills_and_pads_slots():
    encoder = fit()
    assert encoder.items.width == 4
    rows = encoder.encode_items(["i1", "i2"], ITEMS)
    tags = encoder.items.fields[2].index()
    assert list(rows[0, 2:]) == [tags["red"], tags["big"]]
    assert list(rows[1, 2:]) == [tags["big"], MISSING_ID]


def test_multi_valued_feature_truncates_to_max_values():
    rows = fit().encode_items(["i1"], [{"tags": "red|big|extra"}])
    assert MISSING_ID not in rows[0, 2:]
    assert rows.shape == (1, 4)


def test_round_trip_through_json(tmp_path):
    encoder = fit()
    encoder.save(tmp_path)
    loaded = FeatureEncoder.load(tmp_path)
    expected = encoder.encode_items(["i2", "x"], [ITEMS[1], {"brand": "new"}])
    assert np.array_equal(
        loaded.encode_items(["i2", "x"], [ITEMS[1], {"brand": "new"}]), expected
    )
    assert loaded.schema == SCHEMA


def test_encoding_is_the_same_in_a_fresh_process(tmp_path):
    encoder = fit()
    encoder.save(tmp_path)
    script = (
        "import json, sys\n"
        "from ecrs.data.schema import DatasetSchema\n"
        "from ecrs.features.encoder import FeatureEncoder\n"
        f"schema = DatasetSchema.from_dict(json.loads({json.dumps(json.dumps(SCHEMA.to_dict()))}))\n"
        f"users = json.loads({json.dumps(json.dumps(USERS))})\n"
        f"items = json.loads({json.dumps(json.dumps(ITEMS))})\n"
        "encoder = FeatureEncoder.fit(schema, users=users, items=items,\n"
        "    trained_user_ids=['u1', 'u2'], trained_item_ids=['i2', 'i1'])\n"
        "print(json.dumps(encoder.to_dict()))\n"
    )
    env = {"PYTHONHASHSEED": "12345"}
    output = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    assert json.loads(output) == json.loads(json.dumps(encoder.to_dict()))


def test_encode_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="2 ids but 1 feature rows"):
        fit().encode_users(["u1", "u2"], [USERS[0]])
