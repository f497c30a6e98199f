"""Import a team's own data set: validate it and write a clean Parquet copy.

The source is a data set folder (``schema.json`` plus CSV or Parquet tables).
Rows that cannot be used are skipped and listed in an ``ImportReport``:

- users and items: an empty id, or an id already seen (the first row is kept);
- interactions: an empty or unknown user or item id, or a timestamp that is
  missing or not integer seconds;
- any table: a CSV record with a different number of fields than its header.

A missing column or an unreadable table raises ``DataError`` at once, because
such faults come from a broken export rather than from single rows. The
copy keeps only the columns that the schema names, so ``Dataset.load`` reads
it back without errors.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from ecrs.data.dataset import Dataset, as_text, check_table_file
from ecrs.data.schema import DatasetSchema, EntityTable
from ecrs.errors import ConfigError, DataError

# Bad rows listed per file in ImportReport.summary and in the DataError message.
SHOWN_BAD_ROWS = 10


@dataclass(frozen=True)
class BadRow:
    """A skipped row and why it was skipped.

    ``line`` is the 1-based line in a text file, where a CSV header is line 1.
    In a Parquet file, which has no lines, it is the 1-based row number.
    """

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file} {line_unit(self.file)} {self.line}: {self.reason}"


@dataclass
class ImportReport:
    """Rows read, kept and skipped per file of an import.

    ``rows_read`` and ``rows_kept`` are keyed by file name, in the order the
    files were read. Every ``BadRow`` names one of these files.
    """

    rows_read: dict[str, int] = field(default_factory=dict)
    rows_kept: dict[str, int] = field(default_factory=dict)
    bad_rows: list[BadRow] = field(default_factory=list)

    def add_file(self, file: str, *, read: int, kept: int) -> None:
        self.rows_read[file] = read
        self.rows_kept[file] = kept

    def bad_counts(self) -> dict[str, int]:
        """Number of skipped rows per file, including files with none."""
        counts = dict.fromkeys(self.rows_read, 0)
        for row in self.bad_rows:
            counts[row.file] = counts.get(row.file, 0) + 1
        return counts

    def bad_share(self, file: str) -> float:
        """Share of the rows read from ``file`` that were skipped, from 0 to 1."""
        read = self.rows_read.get(file, 0)
        return self.bad_counts().get(file, 0) / read if read else 0.0

    def summary(self) -> str:
        """Describe the counts of every file and the first bad rows of each."""
        lines = []
        bad_counts = self.bad_counts()
        for file, read in self.rows_read.items():
            lines.append(
                f"{file}: read {read:,} rows, kept {self.rows_kept[file]:,}, "
                f"skipped {bad_counts[file]:,}"
            )
            lines.extend(self._bad_row_lines(file))
        return "\n".join(lines)

    def check_bad_share(self, max_bad_share: float) -> None:
        """Raise DataError if any file has more than ``max_bad_share`` bad rows.

        The message names every such file with its count and share, and lists
        its first bad rows.
        """
        failures = []
        for file, count in self.bad_counts().items():
            share = self.bad_share(file)
            if share <= max_bad_share:
                continue
            failures.append(
                f"{file}: {count:,} of {self.rows_read[file]:,} rows "
                f"({share:.2%}) are invalid, above the limit of {max_bad_share:.2%}"
            )
            failures.extend(self._bad_row_lines(file))
        if failures:
            raise DataError(
                "too many invalid rows to import:\n"
                + "\n".join(failures)
                + "\nFix these rows in the source files, or raise --max-bad-share "
                "to skip them."
            )

    def _bad_row_lines(self, file: str) -> list[str]:
        """List the first SHOWN_BAD_ROWS bad rows of ``file``, indented."""
        rows = [row for row in self.bad_rows if row.file == file]
        lines = [f"  {row}" for row in rows[:SHOWN_BAD_ROWS]]
        if len(rows) > SHOWN_BAD_ROWS:
            lines.append(f"  ... and {len(rows) - SHOWN_BAD_ROWS:,} more")
        return lines


def line_unit(file: str) -> str:
    """Return "row" for a Parquet file and "line" for a text file."""
    return "row" if file.endswith(".parquet") else "line"


def check_max_bad_share(max_bad_share: float) -> None:
    """Raise ConfigError unless ``max_bad_share`` is a share from 0 to 1."""
    if not 0.0 <= max_bad_share <= 1.0:
        raise ConfigError(
            f"max_bad_share is {max_bad_share!r}; "
            "set it to a share from 0 to 1, such as 0.01 for 1%"
        )


def import_dataset(
    source: str | Path,
    destination: str | Path,
    *,
    max_bad_share: float = 0.01,
) -> ImportReport:
    """Validate the data set in ``source`` and write a clean copy to ``destination``.

    The copy has the same schema with every table file renamed to ``.parquet``.
    Nothing is written when a table misses a schema column, when the bad rows
    of any file exceed ``max_bad_share`` (DataError), or when ``destination``
    is ``source`` (ConfigError). Existing files of the same names in
    ``destination`` are overwritten.
    """
    check_max_bad_share(max_bad_share)
    source, destination = Path(source), Path(destination)
    if not source.is_dir():
        raise DataError(
            f"source folder {source} does not exist; pass the folder that "
            "holds your schema.json and table files"
        )
    if destination.resolve() == source.resolve():
        raise ConfigError(
            f"the import destination {destination} is the source folder; "
            "choose another folder for the clean copy"
        )
    schema = DatasetSchema.load(source)
    clean_schema = _parquet_schema(schema)
    report = ImportReport()

    users = _clean_entities(source, schema.users, "users", report)
    items = _clean_entities(source, schema.items, "items", report)
    interactions = _clean_interactions(source, schema, users, items, report)
    report.check_bad_share(max_bad_share)

    for table in (clean_schema.users, clean_schema.items, clean_schema.interactions):
        (destination / table.file).parent.mkdir(parents=True, exist_ok=True)
    Dataset(clean_schema, users, items, interactions).save(destination)
    return report


@dataclass
class _Table:
    """One source table: its rows as text, their lines, and malformed records."""

    frame: pd.DataFrame
    lines: np.ndarray
    malformed: list[BadRow]

    def record(self, report: ImportReport, file: str, kept: int) -> None:
        """Count the rows read and kept; malformed records count as read."""
        others = [row for row in report.bad_rows if row.file != file]
        own = [row for row in report.bad_rows if row.file == file] + self.malformed
        report.bad_rows[:] = others + sorted(own, key=lambda row: row.line)
        report.add_file(file, read=len(self.frame) + len(self.malformed), kept=kept)


def _read_checked(source: Path, file: str, columns: list[str], table: str) -> _Table:
    """Read one table with the line number that BadRow gives each of its rows.

    A CSV record whose number of fields differs from the header's is set aside
    as a malformed BadRow. Raises DataError if the table cannot be read or a
    schema column is missing.
    """
    path = source / file
    check_table_file(path)
    if path.suffix == ".csv":
        frame, lines, malformed = _read_csv_records(path, file, table)
    else:
        frame, malformed = _read_parquet(path, table), []
        lines = np.arange(1, len(frame) + 1)  # 1-based row numbers
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise DataError(
            f"the {table} table {path} lacks the column(s) {missing} that "
            f"schema.json names; its columns are {list(frame.columns)}"
        )
    return _Table(frame[columns].reset_index(drop=True), lines, malformed)


def _read_parquet(path: Path, table: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except ValueError as exc:  # ArrowInvalid and other unreadable files
        raise DataError(
            f"cannot read the {table} table {path}: {exc}; "
            "check that it is a valid Parquet file"
        ) from exc


def _read_csv_records(
    path: Path, file: str, table: str
) -> tuple[pd.DataFrame, np.ndarray, list[BadRow]]:
    """Parse a CSV table as text, with the first line of each data record.

    The csv module counts lines, so line numbers stay right when a quoted field
    spans lines. Blank lines are skipped and empty fields become None.
    """
    records, starts, malformed = [], [], []
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = _csv_header(next(reader, None), path, table)
            previous_end = reader.line_num
            for record in reader:
                start, previous_end = previous_end + 1, reader.line_num
                if not record:
                    continue
                if len(record) != len(header):
                    fields = "1 field" if len(record) == 1 else f"{len(record)} fields"
                    reason = (
                        f"{fields} where the header has {len(header)}; give every "
                        "record one value per column (empty for a missing value) "
                        "and quote values that contain commas or line breaks"
                    )
                    malformed.append(BadRow(file, start, reason))
                    continue
                records.append(record)
                starts.append(start)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataError(
            f"cannot read the {table} table {path}: {exc}; "
            "check that it is a UTF-8 CSV file"
        ) from exc
    frame = pd.DataFrame(records, columns=header, dtype=object)
    frame = frame.where(frame != "", None)
    return frame, np.array(starts, dtype=np.int64), malformed


def _csv_header(header: list[str] | None, path: Path, table: str) -> list[str]:
    """Return the header of a CSV table, or raise DataError if it is unusable."""
    if not header:
        raise DataError(
            f"the {table} table {path} is empty; its first line must name the columns"
        )
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DataError(
            f"the {table} table {path} names the column(s) {repeated} more than "
            "once in its header; give every column a distinct name"
        )
    return header


def _clean_entities(
    source: Path, table: EntityTable, name: str, report: ImportReport
) -> pd.DataFrame:
    """Read a users or items table as text, skipping empty and duplicate ids."""
    columns = [table.id, *table.stored_columns]
    source_table = _read_checked(source, table.file, columns, name)
    frame, lines = source_table.frame, source_table.lines
    for column in columns:
        frame[column] = as_text(frame[column])

    ids = frame[table.id]
    empty = ids.isna()
    duplicate = ids.duplicated() & ~empty
    first_line = dict(zip(ids[~empty & ~duplicate], lines[~empty & ~duplicate]))
    for position in np.flatnonzero(empty | duplicate):
        if empty[position]:
            reason = f"empty {table.id}"
        else:
            value = ids[position]
            first = f"{line_unit(table.file)} {first_line[value]}"
            reason = f"duplicate {table.id} {value!r}, first seen on {first}"
        report.bad_rows.append(BadRow(table.file, int(lines[position]), reason))

    kept = frame[~empty & ~duplicate].reset_index(drop=True)
    source_table.record(report, table.file, kept=len(kept))
    return kept


def _clean_interactions(
    source: Path,
    schema: DatasetSchema,
    users: pd.DataFrame,
    items: pd.DataFrame,
    report: ImportReport,
) -> pd.DataFrame:
    """Read the interactions as text and int64 seconds, skipping unusable rows."""
    spec = schema.interactions
    columns = [spec.user_id, spec.item_id, spec.event, spec.timestamp]
    source_table = _read_checked(source, spec.file, columns, "interactions")
    frame, lines = source_table.frame, source_table.lines
    for column in (spec.user_id, spec.item_id, spec.event):
        frame[column] = as_text(frame[column])
    seconds = _timestamp_seconds(frame[spec.timestamp])

    reasons = _interaction_reasons(
        frame,
        seconds,
        spec_columns=(spec.user_id, spec.item_id, spec.timestamp),
        known_users=set(users[schema.users.id]),
        known_items=set(items[schema.items.id]),
    )
    bad = np.array([reason is not None for reason in reasons], dtype=bool)
    for position in np.flatnonzero(bad):
        line = int(lines[position])
        report.bad_rows.append(BadRow(spec.file, line, str(reasons[position])))

    kept = frame[~bad].reset_index(drop=True)
    kept[spec.timestamp] = seconds[~bad].astype("int64").to_numpy()
    source_table.record(report, spec.file, kept=len(kept))
    return kept


def _timestamp_seconds(column: pd.Series) -> pd.Series:
    """Convert timestamps to float seconds, NaN where they are not integers.

    Values of magnitude 2**53 or more, far beyond any real date in seconds,
    are NaN too.

    A Parquet datetime column becomes seconds since the epoch, so that its
    nanoseconds are not taken for seconds.
    """
    if pd.api.types.is_datetime64_any_dtype(column):
        if isinstance(column.dtype, pd.DatetimeTZDtype):
            column = column.dt.tz_convert("UTC").dt.tz_localize(None)
        nanoseconds = column.to_numpy(dtype="datetime64[ns]").astype("int64")
        seconds = pd.Series(nanoseconds // 1_000_000_000, dtype="float64")
        return seconds.where(column.notna().to_numpy())
    numbers = pd.to_numeric(column, errors="coerce").astype("float64")
    # Beyond 2**53 a float64 no longer represents every integer exactly.
    return numbers.where((numbers % 1 == 0) & (numbers.abs() < 2**53))


def _interaction_reasons(
    frame: pd.DataFrame,
    seconds: pd.Series,
    *,
    spec_columns: tuple[str, str, str],
    known_users: set[str],
    known_items: set[str],
) -> list[str | None]:
    """Return why each row is unusable, or None for a good row.

    Each of the user id, the item id and the timestamp adds its first problem,
    so a row with several faults lists them all, joined by "; ".
    """
    user_column, item_column, timestamp_column = spec_columns
    users, items = frame[user_column], frame[item_column]
    raw_timestamps = frame[timestamp_column]

    def describe_timestamp(row: int) -> str:
        value = raw_timestamps[row]
        return f"{timestamp_column} {value!r} is not integer seconds since the epoch"

    checks_per_column = [
        [
            (users.isna(), lambda row: f"empty {user_column}"),
            (~users.isin(known_users), lambda row: f"unknown {user_column} {users[row]!r}"),
        ],
        [
            (items.isna(), lambda row: f"empty {item_column}"),
            (~items.isin(known_items), lambda row: f"unknown {item_column} {items[row]!r}"),
        ],
        [
            (raw_timestamps.isna(), lambda row: f"empty {timestamp_column}"),
            (seconds.isna(), describe_timestamp),
        ],
    ]
    problems: list[list[str]] = [[] for _ in range(len(frame))]
    for checks in checks_per_column:
        undecided = np.ones(len(frame), dtype=bool)
        for failed, describe in checks:
            new = failed.to_numpy() & undecided
            for row in np.flatnonzero(new):
                problems[row].append(describe(row))
            undecided &= ~new
    return ["; ".join(found) if found else None for found in problems]


def _parquet_schema(schema: DatasetSchema) -> DatasetSchema:
    """Return the schema with every table file renamed to ``.parquet``."""
    files = [
        _parquet_name(table.file)
        for table in (schema.users, schema.items, schema.interactions)
    ]
    if len(set(files)) < len(files):
        raise DataError(
            f"the table files {files} would overwrite each other as Parquet; "
            "give the tables in schema.json different file names"
        )
    return replace(
        schema,
        users=replace(schema.users, file=files[0]),
        items=replace(schema.items, file=files[1]),
        interactions=replace(schema.interactions, file=files[2]),
    )


def _parquet_name(file: str) -> str:
    return str(PurePosixPath(file).with_suffix(".parquet"))
