"""The schema file that names a data set's tables and feature columns.

A data set is a folder with ``schema.json`` and three tables. The schema says
which column of each table is the id and which columns are categorical
features, so nothing downstream hard-codes one data set's column names::

    {
      "name": "shop",
      "users": {"file": "users.parquet", "id": "user_id",
                "features": [{"name": "age"}, {"name": "sex"}]},
      "items": {"file": "items.parquet", "id": "item_id",
                "features": [{"name": "genres", "multi_valued": true,
                              "separator": "|", "max_values": 4}],
                "attributes": ["title"]},
      "interactions": {"file": "interactions.parquet", "user_id": "user_id",
                       "item_id": "item_id", "event": "event",
                       "timestamp": "timestamp"}
    }

``attributes`` are optional columns kept in the stores and returned with an
item or user (a title, a price) but never fed to a model.

Feature values are raw strings. A multi-valued feature holds several values in
one cell, joined by ``separator``; the models read at most ``max_values`` of them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ecrs.errors import DataError

SCHEMA_FILE = "schema.json"
TABLE_SUFFIXES = (".parquet", ".csv")


@dataclass(frozen=True)
class FeatureSpec:
    """One categorical feature column.

    ``required`` (user features only) makes a new user's request without a
    value for it invalid, instead of reading the value as missing.
    """

    name: str
    multi_valued: bool = False
    separator: str = "|"
    max_values: int = 1
    required: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise DataError("a feature in schema.json has an empty name; name it")
        if self.max_values < 1:
            raise DataError(
                f"feature {self.name!r} has max_values={self.max_values}; "
                "set it to 1 or more"
            )

    @property
    def slots(self) -> int:
        """Number of id slots the feature takes in a model input row."""
        return self.max_values if self.multi_valued else 1


@dataclass(frozen=True)
class EntityTable:
    """The users or the items table: an id column, features and attributes."""

    file: str
    id: str
    features: tuple[FeatureSpec, ...]
    attributes: tuple[str, ...] = ()

    @property
    def feature_names(self) -> list[str]:
        return [spec.name for spec in self.features]

    @property
    def required_features(self) -> list[str]:
        return [spec.name for spec in self.features if spec.required]

    @property
    def stored_columns(self) -> list[str]:
        """Columns written to the feature store: features, then attributes."""
        return [*self.feature_names, *self.attributes]


@dataclass(frozen=True)
class InteractionTable:
    """The interactions table: who interacted with what, how and when.

    ``timestamp`` holds integer seconds since the epoch. ``event`` holds the
    interaction type (``browse``, ``cart``) or a rating; every row counts as a
    positive interaction for training.
    """

    file: str
    user_id: str = "user_id"
    item_id: str = "item_id"
    event: str = "event"
    timestamp: str = "timestamp"


@dataclass(frozen=True)
class DatasetSchema:
    """The parsed ``schema.json`` of a data set."""

    name: str
    users: EntityTable
    items: EntityTable
    interactions: InteractionTable
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DatasetSchema:
        check_structure(raw)
        try:
            return cls(
                name=str(raw.get("name", "dataset")),
                users=_entity_table(raw["users"], "users"),
                items=_entity_table(raw["items"], "items"),
                interactions=InteractionTable(**raw["interactions"]),
                extra=dict(raw.get("extra", {})),
            )
        except KeyError as exc:
            raise DataError(
                f"schema.json is missing the key {exc.args[0]!r}; "
                "it needs 'users', 'items' and 'interactions' sections"
            ) from exc
        except TypeError as exc:
            raise DataError(f"schema.json has an invalid section: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def load(cls, folder: str | Path) -> DatasetSchema:
        path = Path(folder) / SCHEMA_FILE
        if not Path(folder).is_dir():
            raise DataError(
                f"data set folder {folder} does not exist; check the path, or "
                "create the folder with 'ecrs data generate' or 'ecrs data import'"
            )
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise DataError(
                f"no {SCHEMA_FILE} in {folder}; a data set folder needs one "
                "(see 'Bringing your own data' in the README). For the original "
                "MovieLens 100K files, convert them first with 'ecrs data movielens'"
            ) from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path} is not valid UTF-8 JSON: {exc}") from exc
        return cls.from_dict(raw)

    def save(self, folder: str | Path, *, file_name: str = SCHEMA_FILE) -> Path:
        path = Path(folder) / file_name
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path


def check_structure(raw: Any) -> None:
    """Raise DataError unless ``raw`` has the JSON types schema.json needs:
    objects for the sections, text for file and column names, lists for
    features and attributes."""
    if not isinstance(raw, dict):
        raise DataError(
            f"schema.json contains a JSON {type(raw).__name__}, not an object with "
            "'users', 'items' and 'interactions' sections"
        )
    for section in ("users", "items", "interactions"):
        if section in raw and not isinstance(raw[section], dict):
            raise DataError(
                f"schema.json section {section!r} is {raw[section]!r}; write an object"
            )
    for section in ("users", "items"):
        table = raw.get(section, {})
        _check_texts(table, section, ("file", "id"))
        for key in ("features", "attributes"):
            entries = table.get(key, [])
            if not isinstance(entries, (list, tuple)):
                raise DataError(
                    f"schema.json {section}.{key} is {entries!r}; write a list"
                )
            for entry in entries:
                _check_entry(entry, section, key)
    _check_texts(raw.get("interactions", {}), "interactions", tuple(raw.get("interactions", {})))
    if not isinstance(raw.get("extra", {}), dict):
        raise DataError(f"schema.json 'extra' is {raw['extra']!r}; write an object")


def _check_texts(table: dict[str, Any], section: str, keys: tuple[str, ...]) -> None:
    for key in keys:
        if key in table and not (isinstance(table[key], str) and table[key]):
            raise DataError(
                f"schema.json {section}.{key} is {table[key]!r}; write a non-empty "
                "file or column name"
            )


def _check_entry(entry: Any, section: str, key: str) -> None:
    name = entry.get("name") if isinstance(entry, dict) and key == "features" else entry
    if not (isinstance(name, str) and name):
        raise DataError(
            f"schema.json {section}.{key} has the entry {entry!r}; write a column "
            'name, or for a feature an object such as {"name": "tags"}'
        )


def _entity_table(raw: dict[str, Any], section: str) -> EntityTable:
    features = []
    for entry in raw.get("features", []):
        if isinstance(entry, str):
            entry = {"name": entry}
        features.append(FeatureSpec(**entry))
    names = [spec.name for spec in features]
    if len(set(names)) != len(names):
        raise DataError(
            f"schema.json section {section!r} lists a feature twice: {names}"
        )
    if raw["id"] in names:
        raise DataError(
            f"schema.json section {section!r} lists its id column {raw['id']!r} "
            "as a feature; the id is always used, remove it from 'features'"
        )
    attributes = tuple(raw.get("attributes", ()))
    overlap = set(attributes) & {raw["id"], *names}
    if overlap:
        raise DataError(
            f"schema.json section {section!r} lists {sorted(overlap)} both as "
            "attributes and as the id or a feature; keep each column in one place"
        )
    return EntityTable(
        file=raw["file"], id=raw["id"], features=tuple(features), attributes=attributes
    )
