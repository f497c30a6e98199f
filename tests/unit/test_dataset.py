from __future__ import annotations

import json

import pandas as pd
import pytest

from ecrs.data.dataset import Dataset, read_table
from ecrs.data.generate import generate_shop_dataset
from ecrs.data.schema import DatasetSchema
from ecrs.errors import DataError


def make_schema(suffix: str) -> DatasetSchema:
    return DatasetSchema.from_dict(
        {
            "name": "tiny",
            "users": {"file": f"users{suffix}", "id": "user_id", "features": ["age"]},
            "items": {
                "file": f"items{suffix}",
                "id": "item_id",
                "features": [
                    {
                        "name": "tags",
                        "multi_valued": True,
                        "separator": "|",
                        "max_values": 2,
                    }
                ],
                "attributes": ["title"],
            },
            "interactions": {"file": f"interactions{suffix}"},
        }
    )


def make_dataset(suffix: str) -> Dataset:
    users = pd.DataFrame({"user_id": ["u1", "u2"], "age": ["18-24", None]})
    items = pd.DataFrame(
        {
            "item_id": ["i1", "i2", "i3"],
            "tags": ["a|b", "b", None],
            "title": ["Caf\u00e9 mug", "Pen", "Desk, oak"],
        }
    )
    interactions = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u1"],
            "item_id": ["i1", "i3", "i2"],
            "event": ["browse", "cart", "browse"],
            "timestamp": pd.array(
                [1_700_000_000, 1_700_000_005, 1_700_000_010], dtype="int64"
            ),
        }
    )
    return Dataset(make_schema(suffix), users, items, interactions)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_save_load_round_trip(tmp_path, suffix):
    original = make_dataset(suffix)

    original.save(tmp_path)
    loaded = Dataset.load(tmp_path)

    assert (tmp_path / f"users{suffix}").is_file()
    assert loaded.schema == original.schema
    pd.testing.assert_frame_equal(loaded.users, original.users)
    pd.testing.assert_frame_equal(loaded.items, original.items)
    pd.testing.assert_frame_equal(loaded.interactions, original.interactions)
    assert loaded.interactions["timestamp"].dtype == "int64"


def test_load_csv_numbers_as_text(tmp_path):
    dataset = make_dataset(".csv")
    dataset.save(tmp_path)
    (tmp_path / "users.csv").write_text("user_id,age\n007,30\n8,\n", encoding="utf-8")
    (tmp_path / "interactions.csv").write_text(
        "user_id,item_id,event,timestamp\n", encoding="utf-8"
    )

    users = Dataset.load(tmp_path).users

    assert users["user_id"].tolist() == ["007", "8"]
    assert users["age"].tolist() == ["30", None]


def test_load_unknown_interaction_user_raises(tmp_path):
    dataset = make_dataset(".csv")
    dataset.save(tmp_path)
    item = dataset.items["item_id"].iloc[0]
    (tmp_path / "interactions.csv").write_text(
        f"user_id,item_id,event,timestamp\nghost,{item},browse,5\n", encoding="utf-8"
    )

    with pytest.raises(
        DataError, match=r"first 'ghost' in row 1; run 'ecrs data import'"
    ):
        Dataset.load(tmp_path)


def test_load_missing_column_names_it(tmp_path):
    make_dataset(".csv").save(tmp_path)
    (tmp_path / "items.csv").write_text("item_id,title\ni1,Mug\n", encoding="utf-8")

    expected = r"items table lacks the column\(s\) \['tags'\]"
    with pytest.raises(DataError, match=expected):
        Dataset.load(tmp_path)


def test_load_duplicate_id_raises(tmp_path):
    make_dataset(".csv").save(tmp_path)
    users = "user_id,age\nu1,30\nu2,40\nu1,50\n"
    (tmp_path / "users.csv").write_text(users, encoding="utf-8")

    with pytest.raises(DataError, match=r"users table lists id 'u1' 2 times"):
        Dataset.load(tmp_path)


def test_load_empty_id_names_row(tmp_path):
    make_dataset(".csv").save(tmp_path)
    (tmp_path / "users.csv").write_text("user_id,age\nu1,30\n,40\n", encoding="utf-8")

    with pytest.raises(DataError, match=r"users table has an empty id in row 2"):
        Dataset.load(tmp_path)


def test_load_bad_timestamp_names_value(tmp_path):
    make_dataset(".csv").save(tmp_path)
    (tmp_path / "interactions.csv").write_text(
        "user_id,item_id,event,timestamp\nu1,i1,browse,yesterday\n", encoding="utf-8"
    )

    with pytest.raises(DataError, match=r"timestamp 'yesterday' in row 1"):
        Dataset.load(tmp_path)


def test_load_without_schema_raises(tmp_path):
    with pytest.raises(DataError, match=r"no schema.json"):
        Dataset.load(tmp_path)


def test_load_unknown_suffix_raises(tmp_path):
    make_dataset(".csv").save(tmp_path)
    raw = json.loads((tmp_path / "schema.json").read_text(encoding="utf-8"))
    raw["users"]["file"] = "users.xlsx"
    (tmp_path / "schema.json").write_text(json.dumps(raw), encoding="utf-8")

    with pytest.raises(DataError, match=r"suffix '\.xlsx'"):
        Dataset.load(tmp_path)


def test_truncated_table_is_a_data_error(tmp_path):
    """A table cut short (a writer killed halfway) raises DataError naming
    the file, not pyarrow's ArrowInvalid."""
    path = tmp_path / "users.parquet"
    pd.DataFrame({"user_id": ["u1", "u2"]}).to_parquet(path, index=False)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataError, match="users.parquet is not a readable parquet file"):
        read_table(path)


def test_save_replaces_files_and_leaves_no_partial_files(tmp_path):
    folder = tmp_path / "shop"
    generate_shop_dataset(num_users=20, num_items=10, num_interactions=50, seed=1).save(
        folder
    )
    (folder / ".users.1.partial.parquet").write_bytes(b"left by a killed save")
    dataset = generate_shop_dataset(
        num_users=30, num_items=10, num_interactions=50, seed=2
    )
    dataset.save(folder)
    assert len(Dataset.load(folder).users) == 30
    assert [path.name for path in folder.iterdir() if path.name.startswith(".")] == []
