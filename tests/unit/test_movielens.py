from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from ecrs.data.dataset import Dataset
from ecrs.data.movielens import DEFAULT_GENRES, age_bucket, load_movielens
from ecrs.errors import ConfigError, DataError

USERS = [
    "1|24|M|technician|85711",
    "2|53|F|other|94043",
    "3|15|M|student|T8H1N",
    "4|60|F|retired|",
]


def item_line(item_id: str, title: str, date: str, genres: set[str]) -> str:
    flags = ["1" if name in genres else "0" for name in DEFAULT_GENRES]
    url = "http://us.imdb.com/M/title-exact?x"
    return "|".join([item_id, title, date, "", url, *flags])


TOY_STORY_GENRES = {"Animation", "Children's", "Comedy"}
LATIN_1_TITLE = "Cit\u00e9 des enfants perdus, La (1995)"
ITEMS = [
    item_line("1", "Toy Story (1995)", "01-Jan-1995", TOY_STORY_GENRES),
    item_line("2", LATIN_1_TITLE, "01-Jan-1995", {"Sci-Fi"}),
    item_line("3", "unknown", "", {"unknown"}),
]

RATINGS = [
    "1\t1\t5\t874965758",
    "1\t2\t3\t876893171",
    "2\t3\t4\t878542960",
    "3\t1\t1\t875071561",
    "4\t2\t2\t889751712",
]


def write_folder(
    folder: Path,
    *,
    users: list[str] = USERS,
    items: list[str] = ITEMS,
    ratings: list[str] = RATINGS,
    genre_file: bool = True,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.user").write_text("\n".join(users) + "\n", encoding="latin-1")
    (folder / "u.item").write_text("\n".join(items) + "\n", encoding="latin-1")
    (folder / "u.data").write_text("\n".join(ratings) + "\n", encoding="latin-1")
    if genre_file:
        lines = [f"{name}|{index}\n" for index, name in enumerate(DEFAULT_GENRES)]
        (folder / "u.genre").write_text("".join(lines) + "\n", encoding="latin-1")
    return folder


def test_load_users_bucketed(tmp_path):
    dataset, _ = load_movielens(write_folder(tmp_path))
    users = dataset.users.set_index("user_id")

    assert users.loc["1"].tolist() == ["18-24", "M", "technician", "85"]
    assert users.loc["2", "age"] == "50-55"
    assert users.loc["3", "age"] == "under 18"
    assert users.loc["3", "zip_prefix"] == "T8"
    assert users.loc["4", "age"] == "56+"
    assert users.loc["4", "zip_prefix"] is None


def test_load_items_genres_year_title(tmp_path):
    dataset, _ = load_movielens(write_folder(tmp_path))
    items = dataset.items.set_index("item_id")

    assert items.loc["1", "genres"] == "Animation|Children's|Comedy"
    assert items.loc["1", "release_year"] == "1995"
    assert items.loc["2", "title"] == LATIN_1_TITLE
    assert items.loc["3", "release_year"] is None
    assert items.loc["3", "genres"] == "unknown"


def test_load_ratings_as_events(tmp_path):
    dataset, report = load_movielens(write_folder(tmp_path))
    interactions = dataset.interactions

    assert interactions.iloc[0].tolist() == ["1", "1", "5", 874965758]
    assert interactions["timestamp"].dtype == "int64"
    assert len(interactions) == 5
    assert report.bad_rows == []
    assert report.rows_kept == {"u.user": 4, "u.item": 3, "u.data": 5}


def test_load_schema_and_round_trip(tmp_path):
    dataset, _ = load_movielens(write_folder(tmp_path / "raw"))
    genres = dataset.schema.items.features[0]

    assert genres.multi_valued
    assert genres.separator == "|"
    assert genres.max_values == 4
    assert dataset.schema.items.attributes == ("title",)

    dataset.save(tmp_path / "clean")
    loaded = Dataset.load(tmp_path / "clean")
    pd.testing.assert_frame_equal(loaded.items, dataset.items)
    pd.testing.assert_frame_equal(loaded.interactions, dataset.interactions)


def test_load_without_genre_file_uses_fixed_list(tmp_path):
    dataset, _ = load_movielens(write_folder(tmp_path, genre_file=False))

    assert dataset.items["genres"].iloc[1] == "Sci-Fi"


def test_load_reports_bad_rows_with_lines(tmp_path):
    users = [*USERS, "5|abc|M|writer|12345", "6|30|F|writer"]
    ratings = [
        *RATINGS,
        "1\t3\tfive\t874965758",
        "9\t1\t4\t874965758",
        "2\t99\t4\t874965758",
    ]
    folder = write_folder(tmp_path, users=users, ratings=ratings)

    dataset, report = load_movielens(folder, max_bad_share=0.5)

    assert [str(row) for row in report.bad_rows] == [
        "u.user line 5: age 'abc' is not a non-negative integer",
        "u.user line 6: expected 5 fields separated by '|', found 4",
        "u.data line 6: rating 'five' is not a non-negative integer",
        "u.data line 7: unknown user_id '9'",
        "u.data line 8: unknown item_id '99'",
    ]
    assert report.bad_counts() == {"u.user": 2, "u.item": 0, "u.data": 3}
    assert report.rows_read == {"u.user": 6, "u.item": 3, "u.data": 8}
    assert len(dataset.users) == 4
    assert len(dataset.interactions) == 5
    assert "u.data: read 8 rows, kept 5, skipped 3" in report.summary()


def test_load_reports_bad_item_fields(tmp_path):
    items = [
        *ITEMS,
        item_line("4", "Broken date", "1995-01-01", set()),
        item_line("5", "Bad flag", "01-Jan-1996", set()).replace("|0|0", "|0|x", 1),
        item_line("1", "Duplicate", "01-Jan-1995", set()),
    ]

    _, report = load_movielens(write_folder(tmp_path, items=items), max_bad_share=1.0)

    assert [str(row) for row in report.bad_rows] == [
        "u.item line 4: release date '1995-01-01' is not a date like 01-Jan-1995",
        "u.item line 5: genre flag 'x' of 'Action' is not 0 or 1",
        "u.item line 6: duplicate item_id '1', first seen on line 1",
    ]


def test_load_too_many_bad_rows_raises(tmp_path):
    ratings = [*RATINGS, "1\t2\t3"]
    folder = write_folder(tmp_path, ratings=ratings)

    with pytest.raises(DataError) as caught:
        load_movielens(folder)

    message = str(caught.value)
    expected = "u.data: 1 of 6 rows (16.67%) are invalid, above the limit of 1.00%"
    assert expected in message
    assert "u.data line 6: expected 4 fields separated by '\\t', found 3" in message
    assert "raise --max-bad-share" in message


def test_load_share_at_limit_passes(tmp_path):
    ratings = [*RATINGS, "1\t2\t3"]

    folder = write_folder(tmp_path, ratings=ratings)

    _, report = load_movielens(folder, max_bad_share=1 / 6)

    assert report.bad_share("u.data") == pytest.approx(1 / 6)


def test_load_missing_file_raises(tmp_path):
    folder = write_folder(tmp_path)
    (folder / "u.data").unlink()

    with pytest.raises(DataError, match=r"u\.data does not exist"):
        load_movielens(folder)


def test_load_invalid_share_raises(tmp_path):
    with pytest.raises(ConfigError, match="max_bad_share is 2"):
        load_movielens(write_folder(tmp_path), max_bad_share=2)


@pytest.mark.parametrize(
    ("age", "bucket"),
    [
        (7, "under 18"),
        (17, "under 18"),
        (18, "18-24"),
        (34, "25-34"),
        (49, "45-49"),
        (55, "50-55"),
        (56, "56+"),
    ],
)
def test_age_bucket_bounds(age, bucket):
    assert age_bucket(age) == bucket


def test_load_real_movielens_100k():
    folder = os.environ.get("ECRS_MOVIELENS_DIR")
    if folder is None:
        pytest.skip("set ECRS_MOVIELENS_DIR to the MovieLens 100K folder")
    assert Path(folder).is_dir(), f"ECRS_MOVIELENS_DIR={folder} is not a folder"

    dataset, report = load_movielens(folder)
    items = dataset.items.set_index("item_id")

    assert len(dataset.users) == 943
    assert len(dataset.items) == 1682
    assert len(dataset.interactions) == 100_000
    assert report.bad_rows == []
    assert items.loc["267", "release_year"] is None
    assert items.loc["1", "title"] == "Toy Story (1995)"
    assert set(dataset.interactions["event"]) == {"1", "2", "3", "4", "5"}
