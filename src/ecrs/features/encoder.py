"""Map raw categorical values to the integer ids the models read.

Training, export and serving all use this one encoder, and each exported
version saves its own copy as JSON, so the mapping never depends on the
process that runs it: vocabularies are explicit lists, never ``hash()``.

A model input row for users (or items) has one slot per field: the id first,
then each feature, where a multi-valued feature takes ``max_values`` slots.
Within every field, id 0 is a missing value or an empty slot. Id 1 is
out-of-vocabulary, a value not seen in training. Known values start at 2.
A new user or item, sent without an id, gets the out-of-vocabulary id, which
training teaches to stand for entities it never saw.

A user row can end with the user's recent items: the ids of the items they
interacted with last, most recent first, in the ``recent_items`` field. Its
vocabulary is the trained item ids, and a user without history leaves it
empty.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ecrs.data.schema import DatasetSchema, EntityTable, FeatureSpec
from ecrs.errors import DataError

MISSING_ID = 0
OOV_ID = 1
FIRST_VALUE_ID = 2
ENCODER_FILE = "encoder.json"
RECENT_ITEMS = "recent_items"


@dataclass(frozen=True)
class Field:
    """One model input field: a column, its vocabulary and its slots."""

    name: str
    vocabulary: tuple[str, ...]
    slots: int = 1
    separator: str | None = None

    @property
    def size(self) -> int:
        """Embedding table size: the values plus the missing and OOV ids."""
        return len(self.vocabulary) + FIRST_VALUE_ID

    def index(self) -> dict[str, int]:
        return {value: FIRST_VALUE_ID + i for i, value in enumerate(self.vocabulary)}


class FieldEncoder:
    """Encode the rows of one entity (users or items) into id matrices."""

    def __init__(self, fields: Sequence[Field]) -> None:
        self.fields = tuple(fields)
        self._indexes = [field.index() for field in self.fields]

    @property
    def width(self) -> int:
        """Number of slots in one encoded row."""
        return sum(field.slots for field in self.fields)

    @property
    def field_sizes(self) -> list[int]:
        return [field.size for field in self.fields]

    @property
    def field_slots(self) -> list[int]:
        return [field.slots for field in self.fields]

    @property
    def feature_names(self) -> list[str]:
        """Raw feature names, without the id and recent-items fields."""
        return [
            field.name for field in self.fields[1:] if field.name != RECENT_ITEMS
        ]

    @property
    def history_length(self) -> int:
        """Slots of the recent-items field; 0 when the encoder has none."""
        field = self.fields[-1]
        return field.slots if field.name == RECENT_ITEMS else 0

    def history_ids(self, item_ids: Sequence[str]) -> list[int]:
        """Encode item ids as recent-items field ids (unknown ones as OOV)."""
        return [self._lookup(len(self.fields) - 1, item) for item in item_ids]

    def encode(
        self, ids: Sequence[str | None], features: Sequence[Mapping[str, Any]]
    ) -> np.ndarray:
        """Encode ids and their raw feature mappings into an ``int64`` matrix.

        A key absent from a mapping, ``None`` or an empty string is a missing
        value. Unknown keys are ignored. An id of ``None`` is a new entity and
        encodes as out-of-vocabulary. A multi-valued feature is a string of
        values joined by its separator, or a list of values.
        """
        if len(ids) != len(features):
            raise ValueError(f"got {len(ids)} ids but {len(features)} feature rows")
        rows = np.zeros((len(ids), self.width), dtype=np.int64)
        for row, (entity_id, values) in enumerate(zip(ids, features)):
            rows[row] = self._encode_row(entity_id, values)
        return rows

    def _encode_row(
        self, entity_id: str | None, values: Mapping[str, Any]
    ) -> list[int]:
        encoded = [OOV_ID if entity_id is None else self._lookup(0, entity_id)]
        for position, field in enumerate(self.fields[1:], start=1):
            raw = values.get(field.name)
            single = field.slots == 1 and field.separator is None
            if single and not isinstance(raw, (list, tuple)):
                encoded.append(self._lookup(position, raw))
                continue
            parts = _split(raw, field.separator)[: field.slots]
            ids = [self._lookup(position, part) for part in parts]
            encoded.extend(ids + [MISSING_ID] * (field.slots - len(ids)))
        return encoded

    def unknown_features(self, row: np.ndarray) -> list[str]:
        """Name the features whose value in an encoded row is out-of-vocabulary.

        The id field is left out: a new user's or item's id is always unknown.
        So are recent items, which come from the stores, not from the caller.
        """
        names = []
        start = self.fields[0].slots
        for field in self.fields[1:]:
            if field.name == RECENT_ITEMS:
                continue
            if np.any(row[start : start + field.slots] == OOV_ID):
                names.append(field.name)
            start += field.slots
        return names

    def _lookup(self, position: int, raw: Any) -> int:
        if raw is None:
            return MISSING_ID
        text = str(raw).strip()
        if not text:
            return MISSING_ID
        return self._indexes[position].get(text, OOV_ID)

    def to_dict(self) -> list[dict[str, Any]]:
        return [
            {
                "name": field.name,
                "slots": field.slots,
                "separator": field.separator,
                "vocabulary": list(field.vocabulary),
            }
            for field in self.fields
        ]

    @classmethod
    def from_dict(cls, raw: Sequence[Mapping[str, Any]]) -> FieldEncoder:
        return cls(
            [
                Field(
                    name=entry["name"],
                    vocabulary=tuple(entry["vocabulary"]),
                    slots=int(entry["slots"]),
                    separator=entry.get("separator"),
                )
                for entry in raw
            ]
        )


class FeatureEncoder:
    """The user and item encoders of one model version, with the schema."""

    def __init__(
        self, schema: DatasetSchema, users: FieldEncoder, items: FieldEncoder
    ) -> None:
        self.schema = schema
        self.users = users
        self.items = items

    @classmethod
    def fit(
        cls,
        schema: DatasetSchema,
        *,
        users: Iterable[Mapping[str, Any]],
        items: Iterable[Mapping[str, Any]],
        trained_user_ids: Iterable[str],
        trained_item_ids: Iterable[str],
        min_count: int = 1,
        history_length: int = 0,
    ) -> FeatureEncoder:
        """Build vocabularies from user and item rows.

        Only ids in ``trained_user_ids`` and ``trained_item_ids`` (those that
        occur in the training interactions) get their own id, so that every
        other id maps to the out-of-vocabulary embedding, which training
        teaches to stand for an unseen user or item. A feature value seen fewer
        than ``min_count`` times is out-of-vocabulary too. With a
        ``history_length`` above 0, user rows end with that many slots of
        recent items.
        """
        if history_length > 0 and RECENT_ITEMS in schema.users.feature_names:
            raise DataError(
                f"the users table has a feature named {RECENT_ITEMS!r}, which the "
                "encoder reserves for recent items; rename that feature"
            )
        item_encoder = _fit_entity(schema.items, list(items), trained_item_ids, min_count)
        user_encoder = _fit_entity(schema.users, list(users), trained_user_ids, min_count)
        if history_length > 0:
            recent = Field(
                name=RECENT_ITEMS,
                vocabulary=item_encoder.fields[0].vocabulary,
                slots=history_length,
            )
            user_encoder = FieldEncoder([*user_encoder.fields, recent])
        return cls(schema, user_encoder, item_encoder)

    def check_matches(self, schema: DatasetSchema) -> None:
        """Raise ``DataError`` unless ``schema`` has this encoder's name and features.

        A data set with other feature columns, or another data set's name,
        would be stored under keys and encoded with ids the models never saw.
        """
        own = self.schema
        differences = []
        if own.name != schema.name:
            differences.append(f"name {schema.name!r} instead of {own.name!r}")
        for side in ("users", "items"):
            # Whether a feature is required changes no key and no id.
            expected = _encoding_specs(getattr(own, side).features)
            actual = _encoding_specs(getattr(schema, side).features)
            if expected != actual:
                differences.append(
                    f"{side} features {[f.name for f in actual]} instead of "
                    f"{[f.name for f in expected]}"
                )
        if differences:
            raise DataError(
                "the data set does not match the model version: it has "
                + "; ".join(differences)
                + ". Train and export a version on this data set first"
            )

    def encode_users(
        self, ids: Sequence[str | None], features: Sequence[Mapping[str, Any]]
    ) -> np.ndarray:
        return self.users.encode(ids, features)

    def encode_items(
        self, ids: Sequence[str | None], features: Sequence[Mapping[str, Any]]
    ) -> np.ndarray:
        return self.items.encode(ids, features)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema.to_dict(),
            "users": self.users.to_dict(),
            "items": self.items.to_dict(),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FeatureEncoder:
        return cls(
            DatasetSchema.from_dict(raw["schema"]),
            FieldEncoder.from_dict(raw["users"]),
            FieldEncoder.from_dict(raw["items"]),
        )

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / ENCODER_FILE
        path.write_text(
            json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8"
        )
        return path

    @classmethod
    def load(cls, folder: str | Path) -> FeatureEncoder:
        path = Path(folder) / ENCODER_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise DataError(
                f"no {ENCODER_FILE} in {folder}; export the model version again"
            ) from exc
        return cls.from_dict(raw)


def _fit_entity(
    table: EntityTable,
    rows: list[Mapping[str, Any]],
    trained_ids: Iterable[str],
    min_count: int,
) -> FieldEncoder:
    id_vocabulary = tuple(sorted({str(value) for value in trained_ids}))
    fields = [Field(name=table.id, vocabulary=id_vocabulary)]
    for spec in table.features:
        fields.append(_fit_feature(spec, rows, min_count))
    return FieldEncoder(fields)


def _fit_feature(
    spec: FeatureSpec, rows: list[Mapping[str, Any]], min_count: int
) -> Field:
    counts: Counter[str] = Counter()
    for row in rows:
        raw = row.get(spec.name)
        if spec.multi_valued:
            counts.update(_split(raw, spec.separator)[: spec.max_values])
        elif raw is not None and str(raw).strip():
            counts[str(raw).strip()] += 1
    # Most frequent first, ties by value, so the order is the same in every run.
    ranked = sorted(
        (value for value, count in counts.items() if count >= min_count),
        key=lambda value: (-counts[value], value),
    )
    return Field(
        name=spec.name,
        vocabulary=tuple(ranked),
        slots=spec.slots,
        separator=spec.separator if spec.multi_valued else None,
    )


def _split(raw: Any, separator: str | None) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, (list, tuple)):
        parts = [str(part) for part in raw]
    elif separator is None:
        parts = [str(raw)]
    else:
        parts = str(raw).split(separator)
    return [part.strip() for part in parts if part.strip()]


def _encoding_specs(specs: tuple[FeatureSpec, ...]) -> list[FeatureSpec]:
    return [replace(spec, required=False) for spec in specs]
