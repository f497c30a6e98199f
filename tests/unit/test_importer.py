from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ecrs.data.dataset import Dataset
from ecrs.data.importer import BadRow, ImportReport, import_dataset
from ecrs.errors import ConfigError, DataError

SCHEMA = {
    "name": "team",
    "users": {"file": "users.csv", "id": "user_id", "features": ["age"]},
    "items": {
        "file": "items.csv",
        "id": "item_id",
        "features": ["brand"],
        "attributes": ["title"],
    },
    "interactions": {"file": "interactions.csv"},
}

USERS = "user_id,age,note\nu1,25-34,x\nu2,18-24,y\nu3,,z\n"
ITEMS = 'item_id,brand,title\ni1,Acme,Acme kettle\ni2,Bolt,"Bolt drill, 18V"\n'
INTERACTIONS = (
    "user_id,item_id,event,timestamp\n"
    "u1,i1,browse,1700000000\n"
    "u2,i2,cart,1700000100\n"
    "u3,i1,browse,1.7e9\n"
)


def write_source(
    folder: Path,
    *,
    users: str = USERS,
    items: str = ITEMS,
    interactions: str = INTERACTIONS,
    schema: dict = SCHEMA,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "schema.json").write_text(json.dumps(schema), encoding="utf-8")
    (folder / schema["users"]["file"]).write_text(users, encoding="utf-8")
    (folder / schema["items"]["file"]).write_text(items, encoding="utf-8")
    (folder / schema["interactions"]["file"]).write_text(interactions, encoding="utf-8")
    return folder


def test_import_writes_loadable_parquet(tmp_path):
    source = write_source(tmp_path / "source")

    report = import_dataset(source, tmp_path / "clean")
    dataset = Dataset.load(tmp_path / "clean")

    assert dataset.schema.users.file == "users.parquet"
    assert dataset.schema.interactions.file == "interactions.parquet"
    assert (tmp_path / "clean" / "items.parquet").is_file()
    assert list(dataset.users.columns) == ["user_id", "age"]
    assert dataset.users["age"].tolist() == ["25-34", "18-24", None]
    assert dataset.items["title"].tolist() == ["Acme kettle", "Bolt drill, 18V"]
    timestamps = dataset.interactions["timestamp"].tolist()
    assert timestamps == [1_700_000_000, 1_700_000_100, 1_700_000_000]
    assert report.bad_rows == []
    assert report.rows_kept == {"users.csv": 3, "items.csv": 2, "interactions.csv": 3}


def test_import_parquet_source(tmp_path):
    source = tmp_path / "source"
    write_source(source)
    original = Dataset.load(source)
    schema = {
        **SCHEMA,
        "users": {**SCHEMA["users"], "file": "users.parquet"},
        "items": {**SCHEMA["items"], "file": "items.parquet"},
        "interactions": {"file": "interactions.parquet"},
    }
    parquet_source = tmp_path / "parquet"
    parquet_source.mkdir()
    original.users.to_parquet(parquet_source / "users.parquet", index=False)
    original.items.to_parquet(parquet_source / "items.parquet", index=False)
    original.interactions.assign(
        timestamp=pd.to_datetime(original.interactions["timestamp"], unit="s")
    ).to_parquet(parquet_source / "interactions.parquet", index=False)
    (parquet_source / "schema.json").write_text(json.dumps(schema), encoding="utf-8")

    import_dataset(parquet_source, tmp_path / "clean")
    dataset = Dataset.load(tmp_path / "clean")

    pd.testing.assert_frame_equal(dataset.users, original.users)
    pd.testing.assert_frame_equal(dataset.interactions, original.interactions)


def test_import_skips_bad_rows_with_lines(tmp_path):
    users = USERS + "u1,45-54,dup\n,35-44,empty\n"
    interactions = INTERACTIONS + (
        "u9,i1,browse,1700000200\n"
        "u1,i7,browse,1700000200\n"
        "u1,i1,browse,soon\n"
        "u2,i1,browse,1700000000.5\n"
        "u2,,browse,1700000300\n"
        "u2,i1,browse,\n"
    )
    source = write_source(tmp_path / "source", users=users, interactions=interactions)

    report = import_dataset(source, tmp_path / "clean", max_bad_share=1.0)

    assert [str(row) for row in report.bad_rows] == [
        "users.csv line 5: duplicate user_id 'u1', first seen on line 2",
        "users.csv line 6: empty user_id",
        "interactions.csv line 5: unknown user_id 'u9'",
        "interactions.csv line 6: unknown item_id 'i7'",
        "interactions.csv line 7: timestamp 'soon' is not integer seconds "
        "since the epoch",
        "interactions.csv line 8: timestamp '1700000000.5' is not integer seconds "
        "since the epoch",
        "interactions.csv line 9: empty item_id",
        "interactions.csv line 10: empty timestamp",
    ]
    dataset = Dataset.load(tmp_path / "clean")
    assert dataset.users.set_index("user_id").loc["u1", "age"] == "25-34"
    assert len(dataset.users) == 3
    assert len(dataset.interactions) == 3
    assert report.rows_read["interactions.csv"] == 9
    assert report.rows_kept["interactions.csv"] == 3


def test_import_too_many_bad_rows_raises(tmp_path):
    interactions = INTERACTIONS + "u9,i1,browse,1700000200\n"
    source = write_source(tmp_path / "source", interactions=interactions)

    with pytest.raises(DataError) as caught:
        import_dataset(source, tmp_path / "clean", max_bad_share=0.2)

    message = str(caught.value)
    expected = (
        "interactions.csv: 1 of 4 rows (25.00%) are invalid, above the limit of 20.00%"
    )
    assert expected in message
    assert "interactions.csv line 5: unknown user_id 'u9'" in message
    assert not (tmp_path / "clean").exists()


def test_import_missing_column_raises(tmp_path):
    source = write_source(tmp_path / "source", items="item_id,title\ni1,Kettle\n")

    with pytest.raises(DataError, match=r"lacks the column\(s\) \['brand'\]"):
        import_dataset(source, tmp_path / "clean")


@pytest.mark.parametrize(
    ("users", "expected"),
    [
        ("user_id,age\nu1,30,extra\nu2,40\n", "users.csv line 2: 3 fields"),
        ("user_id,age\nu1,30\nu2\n", "users.csv line 3: 1 field where"),
    ],
)
def test_import_skips_wrong_field_count(tmp_path, users, expected):
    source = write_source(tmp_path / "source", users=users)

    report = import_dataset(source, tmp_path / "clean", max_bad_share=1.0)

    user_rows = [row for row in report.bad_rows if row.file == "users.csv"]
    assert len(user_rows) == 1
    assert str(user_rows[0]).startswith(expected)
    assert "where the header has 2" in str(user_rows[0])
    assert report.rows_read["users.csv"] == 2
    assert report.rows_kept["users.csv"] == 1


def test_wrong_field_count_counts_toward_share(tmp_path):
    users = "user_id,age\nu1,30\nu2,40\nu3\n"
    source = write_source(tmp_path / "source", users=users)

    with pytest.raises(DataError, match=r"users.csv: 1 of 3 rows \(33.33%\)"):
        import_dataset(source, tmp_path / "clean", max_bad_share=0.1)


def test_import_lists_every_fault_of_a_row(tmp_path):
    interactions = INTERACTIONS + "u9,i7,browse,yesterday\n"
    source = write_source(tmp_path / "source", interactions=interactions)

    report = import_dataset(source, tmp_path / "clean", max_bad_share=1.0)

    assert [str(row) for row in report.bad_rows] == [
        "interactions.csv line 5: unknown user_id 'u9'; unknown item_id 'i7'; "
        "timestamp 'yesterday' is not integer seconds since the epoch"
    ]


@pytest.mark.parametrize(
    ("users", "expected"),
    [
        ("", "is empty; its first line must name the columns"),
        ("user_id,age,age\nu1,30,31\n", r"names the column\(s\) \['age'\] more than once"),
    ],
)
def test_import_unusable_header_raises(tmp_path, users, expected):
    source = write_source(tmp_path / "source", users=users)

    with pytest.raises(DataError, match=expected):
        import_dataset(source, tmp_path / "clean")


def test_import_missing_source_folder_raises(tmp_path):
    with pytest.raises(DataError, match=r"source folder .*nowhere does not exist"):
        import_dataset(tmp_path / "nowhere", tmp_path / "clean")


def test_import_lines_count_quoted_line_breaks(tmp_path):
    items = 'item_id,brand,title\ni1,Acme,"Kettle\nwith\nlid"\n\ni1,Bolt,Drill\n'
    source = write_source(tmp_path / "source", items=items)

    report = import_dataset(source, tmp_path / "clean", max_bad_share=1.0)

    assert [str(row) for row in report.bad_rows] == [
        "items.csv line 6: duplicate item_id 'i1', first seen on line 2",
        "interactions.csv line 3: unknown item_id 'i2'",
    ]


def test_import_parquet_bad_rows_use_row_numbers(tmp_path):
    source = write_source(tmp_path / "source")
    dataset = Dataset.load(source)
    schema = {**SCHEMA, "users": {**SCHEMA["users"], "file": "users.parquet"}}
    (source / "schema.json").write_text(json.dumps(schema), encoding="utf-8")
    pd.concat([dataset.users, dataset.users.head(1)]).to_parquet(
        source / "users.parquet", index=False
    )

    report = import_dataset(source, tmp_path / "clean", max_bad_share=1.0)

    assert [str(row) for row in report.bad_rows] == [
        "users.parquet row 4: duplicate user_id 'u1', first seen on row 1",
    ]


def test_import_unreadable_parquet_raises(tmp_path):
    source = write_source(tmp_path / "source")
    schema = {**SCHEMA, "users": {**SCHEMA["users"], "file": "users.parquet"}}
    (source / "schema.json").write_text(json.dumps(schema), encoding="utf-8")
    (source / "users.parquet").write_bytes(b"not parquet")

    with pytest.raises(DataError, match=r"cannot read the users table"):
        import_dataset(source, tmp_path / "clean")


def test_import_into_source_raises(tmp_path):
    source = write_source(tmp_path / "source")

    with pytest.raises(ConfigError, match="is the source folder"):
        import_dataset(source, source)


def test_import_invalid_share_raises(tmp_path):
    source = write_source(tmp_path / "source")

    with pytest.raises(ConfigError, match="max_bad_share is -0.5"):
        import_dataset(source, tmp_path / "clean", max_bad_share=-0.5)


def test_report_summary_limits_listed_rows():
    report = ImportReport()
    report.add_file("interactions.csv", read=100, kept=88)
    for line in range(2, 14):
        report.bad_rows.append(BadRow("interactions.csv", line, "bad"))

    summary = report.summary()

    first_line = "interactions.csv: read 100 rows, kept 88, skipped 12"
    assert summary.splitlines()[0] == first_line
    assert "interactions.csv line 11: bad" in summary
    assert "interactions.csv line 12: bad" not in summary
    assert summary.endswith("... and 2 more")
    assert report.bad_share("interactions.csv") == pytest.approx(0.12)


def test_bad_row_parquet_uses_row():
    row = BadRow("users.parquet", 3, "empty user_id")

    assert str(row) == "users.parquet row 3: empty user_id"
