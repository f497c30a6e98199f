"""Read and write a data set folder: ``schema.json`` plus three tables.

Tables are Parquet or CSV, chosen by the file suffix named in the schema.
In memory every id and feature value is a Python ``str`` (missing values are
``None``) and timestamps are ``int64`` seconds, whatever the file stored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from ecrs.data.schema import SCHEMA_FILE, TABLE_SUFFIXES, DatasetSchema, EntityTable
from ecrs.errors import DataError

# Marks the name of a table file that ``Dataset.save`` is still writing.
PARTIAL = ".partial"


@dataclass
class Dataset:
    """A schema and its users, items and interactions tables."""

    schema: DatasetSchema
    users: pd.DataFrame
    items: pd.DataFrame
    interactions: pd.DataFrame

    @classmethod
    def load(cls, folder: str | Path) -> Dataset:
        folder = Path(folder)
        schema = DatasetSchema.load(folder)
        users = _normalize_entities(
            read_table(folder / schema.users.file), schema.users, "users"
        )
        items = _normalize_entities(
            read_table(folder / schema.items.file), schema.items, "items"
        )
        interactions = _normalize_interactions(
            read_table(folder / schema.interactions.file), schema
        )
        _check_references(interactions, users, items, schema, folder)
        return cls(schema, users, items, interactions)

    def save(self, folder: str | Path) -> Path:
        """Write the tables under the file names the schema gives, and the schema.

        Each file is first written to a hidden temporary file beside it, and
        the files are renamed into place once all are written, the schema
        last. A process killed while writing (an import of a large export
        takes seconds) leaves the previous data set in ``folder`` whole.
        NOTE: a kill during the renames, which take microseconds, can still
        leave new tables beside old ones.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tables = (
            (self.users, self.schema.users.file),
            (self.items, self.schema.items.file),
            (self.interactions, self.schema.interactions.file),
        )
        _remove_partial_files(folder)
        staged: list[tuple[Path, Path]] = []
        try:
            for frame, file in tables:
                target = folder / file
                staged.append((_temporary_path(target), target))
                write_table(frame, staged[-1][0])
            schema_path = folder / SCHEMA_FILE
            staged.append((_temporary_path(schema_path), schema_path))
            self.schema.save(folder, file_name=staged[-1][0].name)
            for temporary, target in staged:
                os.replace(temporary, target)
        finally:
            for temporary, _ in staged:
                temporary.unlink(missing_ok=True)
        return folder

    @property
    def user_ids(self) -> list[str]:
        return self.users[self.schema.users.id].tolist()

    @property
    def item_ids(self) -> list[str]:
        return self.items[self.schema.items.id].tolist()


def _temporary_path(target: Path) -> Path:
    """Return a hidden path beside ``target`` with its suffix, for this process."""
    return target.with_name(f".{target.stem}.{os.getpid()}{PARTIAL}{target.suffix}")


def _remove_partial_files(folder: Path) -> None:
    """Delete the temporary files that a killed ``save`` left in ``folder``."""
    for path in folder.glob(f".*{PARTIAL}.*"):
        path.unlink(missing_ok=True)


def check_table_file(path: Path) -> None:
    """Raise DataError unless ``path`` is an existing ``.parquet`` or ``.csv`` file."""
    _check_suffix(path)
    if not path.exists():
        raise DataError(
            f"table {path} does not exist; check the file name in schema.json"
        )


def read_table(path: Path) -> pd.DataFrame:
    """Read a Parquet or CSV table with every column as text.

    A file that is not a readable table raises DataError naming it.
    """
    check_table_file(path)
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(
            path, dtype=str, keep_default_na=False, na_values=[""], index_col=False
        )
    except (pa.ArrowException, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(
            f"table {path} is not a readable {path.suffix[1:]} file: {exc}; write "
            "it again (a process killed while writing it leaves it truncated)"
        ) from exc


def write_table(frame: pd.DataFrame, path: Path) -> None:
    _check_suffix(path)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)


def _check_suffix(path: Path) -> None:
    if path.suffix not in TABLE_SUFFIXES:
        raise DataError(
            f"table {path.name} has suffix {path.suffix!r}; "
            f"use one of {', '.join(TABLE_SUFFIXES)}"
        )


def _require_columns(frame: pd.DataFrame, columns: list[str], table: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise DataError(
            f"the {table} table lacks the column(s) {missing} that schema.json names; "
            f"its columns are {list(frame.columns)}"
        )


def as_text(column: pd.Series) -> pd.Series:
    """Convert a column to ``str`` values with ``None`` for missing ones."""
    text = column.astype(object).where(column.notna(), None)
    return text.map(lambda value: None if value is None else _format_value(value))


def _format_value(value: object) -> str | None:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _normalize_entities(
    frame: pd.DataFrame, table: EntityTable, name: str
) -> pd.DataFrame:
    columns = [table.id, *table.stored_columns]
    _require_columns(frame, columns, name)
    frame = frame[columns].copy()
    for column in columns:
        frame[column] = as_text(frame[column])
    if frame[table.id].isna().any():
        row = int(frame[table.id].isna().to_numpy().argmax())
        raise DataError(
            f"the {name} table has an empty id in row {row + 1}; every row needs one"
        )
    duplicated = frame[table.id].duplicated()
    if duplicated.any():
        first = frame.loc[duplicated, table.id].iloc[0]
        raise DataError(
            f"the {name} table lists id {first!r} {int((frame[table.id] == first).sum())} "
            "times; ids must be unique"
        )
    return frame.reset_index(drop=True)


def _normalize_interactions(frame: pd.DataFrame, schema: DatasetSchema) -> pd.DataFrame:
    spec = schema.interactions
    columns = [spec.user_id, spec.item_id, spec.event, spec.timestamp]
    _require_columns(frame, columns, "interactions")
    frame = frame[columns].copy()
    for column in (spec.user_id, spec.item_id, spec.event):
        frame[column] = as_text(frame[column])
    timestamps = pd.to_numeric(frame[spec.timestamp], errors="coerce")
    if timestamps.isna().any():
        row = int(timestamps.isna().to_numpy().argmax())
        raise DataError(
            f"the interactions table has timestamp {frame[spec.timestamp].iloc[row]!r} "
            f"in row {row + 1}; timestamps must be integer seconds since the epoch"
        )
    frame[spec.timestamp] = timestamps.astype("int64")
    return frame.reset_index(drop=True)


def _check_references(
    interactions: pd.DataFrame,
    users: pd.DataFrame,
    items: pd.DataFrame,
    schema: DatasetSchema,
    folder: Path,
) -> None:
    """Raise unless every interaction names a user and an item of the tables."""
    spec = schema.interactions
    for column, table, id_column in (
        (spec.user_id, users, schema.users.id),
        (spec.item_id, items, schema.items.id),
    ):
        unknown = ~interactions[column].isin(table[id_column])
        if unknown.any():
            row = int(unknown.to_numpy().argmax())
            raise DataError(
                f"{folder}: {int(unknown.sum())} interaction(s) name a {column} that "
                f"is not in its table, first {interactions[column].iloc[row]!r} in row "
                f"{row + 1}; run 'ecrs data import' to check the data set and skip "
                "such rows"
            )
