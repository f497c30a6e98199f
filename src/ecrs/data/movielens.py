"""Load the MovieLens 100K data set from its original files.

The folder contains ``u.user`` (``id|age|gender|occupation|zip``), ``u.item``
(``id|title|release date|video release date|IMDb URL|`` and one 0/1 flag per
genre), ``u.data`` (tab-separated ``user, item, rating, timestamp``) and
optionally ``u.genre`` (``name|index``, the order of the genre flags). All
files are read as Latin-1, the encoding of the titles in ``u.item``.

A row with the wrong number of fields, a number that does not parse, a
release date not like 01-Jan-1995 or a reference to an unknown user or item
is skipped and listed in the returned ``ImportReport``. So is a duplicate
user or item id (the first row is kept).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ecrs.data.dataset import Dataset
from ecrs.data.importer import BadRow, ImportReport, check_max_bad_share
from ecrs.data.schema import DatasetSchema
from ecrs.errors import DataError

USERS_FILE = "u.user"
ITEMS_FILE = "u.item"
RATINGS_FILE = "u.data"
GENRES_FILE = "u.genre"
ENCODING = "latin-1"

# The genre flags of u.item in column order, as u.genre lists them.
DEFAULT_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy",
    "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror",
    "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip

# Each bucket's upper age in years. Older users fall into OLDEST_AGE_BUCKET.
AGE_BUCKETS = ((17, "under 18"), (24, "18-24"), (34, "25-34"), (44, "35-44"),
               (49, "45-49"), (55, "50-55"))  # fmt: skip
OLDEST_AGE_BUCKET = "56+"

# The fields of u.item before the genre flags.
ITEM_FIELDS_BEFORE_GENRES = 5

MOVIELENS_SCHEMA = DatasetSchema.from_dict(
    {
        "name": "movielens-100k",
        "users": {
            "file": "users.parquet",
            "id": "user_id",
            "features": ["age", "gender", "occupation", "zip_prefix"],
        },
        "items": {
            "file": "items.parquet",
            "id": "item_id",
            "features": [
                {
                    "name": "genres",
                    "multi_valued": True,
                    "separator": "|",
                    "max_values": 4,
                },
                {"name": "release_year"},
            ],
            "attributes": ["title"],
        },
        "interactions": {"file": "interactions.parquet"},
    }
)

_INTEGER = re.compile(r"\d+", re.ASCII)
_RELEASE_DATE = re.compile(r"\d{1,2}-[A-Za-z]{3}-(\d{4})", re.ASCII)

Record = dict[str, str | None]


class _RowError(ValueError):
    """A line that cannot be parsed. The message is the reason for BadRow."""


def load_movielens(
    folder: str | Path, *, max_bad_share: float = 0.01
) -> tuple[Dataset, ImportReport]:
    """Parse the MovieLens 100K files in ``folder`` into a Dataset.

    Ratings become the ``event`` column as text ("4"). Ages are bucketed
    (``AGE_BUCKETS``), zip codes keep their first two characters, and genres
    are joined by "|" in flag order. An empty release date gives
    ``release_year`` None and is not an error.

    Raises DataError when a file is missing or has no rows, or when the
    skipped rows of a file exceed ``max_bad_share`` of the rows read from it.
    """
    check_max_bad_share(max_bad_share)
    folder = Path(folder)
    genres = _read_genres(folder)
    report = ImportReport()

    users = _read_users(folder, report)
    items = _read_items(folder, genres, report)
    interactions = _read_ratings(folder, set(users.user_id), set(items.item_id), report)
    report.check_bad_share(max_bad_share)
    return Dataset(MOVIELENS_SCHEMA, users, items, interactions), report


def _read_users(folder: Path, report: ImportReport) -> pd.DataFrame:
    rows, read = _parse_file(folder / USERS_FILE, "|", 5, _parse_user, report)
    records = _drop_duplicate_ids(rows, USERS_FILE, "user_id", report)
    report.add_file(USERS_FILE, read=read, kept=len(records))
    return pd.DataFrame.from_records(
        records, columns=["user_id", "age", "gender", "occupation", "zip_prefix"]
    )


def _read_items(
    folder: Path, genres: tuple[str, ...], report: ImportReport
) -> pd.DataFrame:
    def parse(fields: list[str]) -> Record:
        return _parse_item(fields, genres)

    field_count = ITEM_FIELDS_BEFORE_GENRES + len(genres)
    rows, read = _parse_file(folder / ITEMS_FILE, "|", field_count, parse, report)
    records = _drop_duplicate_ids(rows, ITEMS_FILE, "item_id", report)
    report.add_file(ITEMS_FILE, read=read, kept=len(records))
    return pd.DataFrame.from_records(
        records, columns=["item_id", "genres", "release_year", "title"]
    )


def _read_ratings(
    folder: Path, user_ids: set[str], item_ids: set[str], report: ImportReport
) -> pd.DataFrame:
    rows, read = _parse_file(folder / RATINGS_FILE, "\t", 4, _parse_rating, report)
    records = []
    for line, record in rows:
        if record["user_id"] not in user_ids:
            reason = f"unknown user_id {record['user_id']!r}"
        elif record["item_id"] not in item_ids:
            reason = f"unknown item_id {record['item_id']!r}"
        else:
            records.append(record)
            continue
        report.bad_rows.append(BadRow(RATINGS_FILE, line, reason))
    report.add_file(RATINGS_FILE, read=read, kept=len(records))

    frame = pd.DataFrame.from_records(
        records, columns=["user_id", "item_id", "event", "timestamp"]
    )
    frame["timestamp"] = frame["timestamp"].astype("int64")
    return frame


def _parse_file(
    path: Path,
    separator: str,
    field_count: int,
    parse: Callable[[list[str]], Record],
    report: ImportReport,
) -> tuple[list[tuple[int, Record]], int]:
    """Parse each non-blank line of ``path`` into a record with its line number.

    Lines that do not parse are added to ``report.bad_rows``. Returns the
    parsed records and the number of non-blank lines read.
    """
    if not path.is_file():
        raise DataError(
            f"{path} does not exist; point to the MovieLens 100K folder that "
            f"contains {USERS_FILE}, {ITEMS_FILE} and {RATINGS_FILE}"
        )
    rows, read = [], 0
    with path.open(encoding=ENCODING) as lines:
        for number, line in enumerate(lines, start=1):
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            read += 1
            try:
                fields = _split_fields(text, separator, field_count)
                rows.append((number, parse(fields)))
            except _RowError as exc:
                report.bad_rows.append(BadRow(path.name, number, str(exc)))
    if read == 0:
        raise DataError(f"{path} has no rows; check that the file is complete")
    return rows, read


def _split_fields(text: str, separator: str, field_count: int) -> list[str]:
    fields = text.split(separator)
    if len(fields) != field_count:
        raise _RowError(
            f"expected {field_count} fields separated by {separator!r}, "
            f"found {len(fields)}"
        )
    return [value.strip() for value in fields]


def _drop_duplicate_ids(
    rows: list[tuple[int, Record]], file: str, id_column: str, report: ImportReport
) -> list[Record]:
    """Keep the first row of each id and report the later ones as bad rows."""
    first_lines: dict[str | None, int] = {}
    records = []
    for line, record in rows:
        value = record[id_column]
        if value in first_lines:
            first = first_lines[value]
            reason = f"duplicate {id_column} {value!r}, first seen on line {first}"
            report.bad_rows.append(BadRow(file, line, reason))
            continue
        first_lines[value] = line
        records.append(record)
    return records


def _parse_user(fields: list[str]) -> Record:
    user_id, age, gender, occupation, zip_code = fields
    return {
        "user_id": _parse_id(user_id, "user_id"),
        "age": age_bucket(_parse_int(age, "age")),
        "gender": gender or None,
        "occupation": occupation or None,
        "zip_prefix": zip_code[:2] or None,
    }


def _parse_item(fields: list[str], genres: tuple[str, ...]) -> Record:
    item_id, title, release_date = fields[:3]
    flags = fields[ITEM_FIELDS_BEFORE_GENRES:]
    names = [name for name, flag in zip(genres, flags) if _parse_flag(flag, name)]
    return {
        "item_id": _parse_id(item_id, "item_id"),
        "genres": "|".join(names) or None,
        "release_year": _parse_release_year(release_date),
        "title": title or None,
    }


def _parse_rating(fields: list[str]) -> Record:
    user_id, item_id, rating, timestamp = fields
    return {
        "user_id": _parse_id(user_id, "user_id"),
        "item_id": _parse_id(item_id, "item_id"),
        "event": str(_parse_int(rating, "rating")),
        "timestamp": str(_parse_int(timestamp, "timestamp")),
    }


def age_bucket(age: int) -> str:
    """Return the age bucket label of ``age`` in years, such as "18-24"."""
    for upper, label in AGE_BUCKETS:
        if age <= upper:
            return label
    return OLDEST_AGE_BUCKET


def _parse_int(value: str, name: str) -> int:
    if not _INTEGER.fullmatch(value):
        raise _RowError(f"{name} {value!r} is not a non-negative integer")
    return int(value)


def _parse_id(value: str, name: str) -> str:
    """Parse an integer id and format it without leading zeros."""
    return str(_parse_int(value, name))


def _parse_flag(value: str, genre: str) -> bool:
    if value not in ("0", "1"):
        raise _RowError(f"genre flag {value!r} of {genre!r} is not 0 or 1")
    return value == "1"


def _parse_release_year(value: str) -> str | None:
    if not value:
        return None
    match = _RELEASE_DATE.fullmatch(value)
    if match is None:
        raise _RowError(f"release date {value!r} is not a date like 01-Jan-1995")
    return match.group(1)


def _read_genres(folder: Path) -> tuple[str, ...]:
    """Read the genre flag order from u.genre, or use DEFAULT_GENRES without it."""
    path = folder / GENRES_FILE
    if not path.is_file():
        return DEFAULT_GENRES
    by_index: dict[int, str] = {}
    for line in path.read_text(encoding=ENCODING).splitlines():
        if not line.strip():
            continue
        name, _, index = line.rpartition("|")
        if not name or not _INTEGER.fullmatch(index.strip()):
            raise DataError(
                f"{path} has the line {line!r}; each line must be 'name|index'"
            )
        by_index[int(index)] = name.strip()
    if sorted(by_index) != list(range(len(by_index))) or not by_index:
        raise DataError(
            f"{path} lists the genre indexes {sorted(by_index)}; "
            "they must run from 0 without gaps"
        )
    return tuple(by_index[index] for index in range(len(by_index)))
