"""Request filters on recommended items: allowed feature values and caps.

``FILTER`` is a JSON object from an item column to the values allowed, such
as ``{"category": ["shoes", "bags"]}``: an item qualifies when its value is
one of them (for a multi-valued feature, when any of its values is).
``CAP`` is a JSON object from an item column to the most results that may
share one value, such as ``{"brand": 2}``. Item columns are the item
features and attributes of the served schema.

A filter on a column that the collection stores as a field (a
single-valued item feature) goes into the Milvus search expression. Other
columns (multi-valued features, attributes) are checked on the items'
stored records after the search, which over-fetches until enough items
qualify (see ``Recommender.qualifying_candidates``). The records are
checked in both cases, so both give the same results.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ecrs.data.schema import EntityTable
from ecrs.errors import InvalidInputError
from ecrs.serving.json_input import parse_json_object

FILTER_INPUT = "FILTER"
CAP_INPUT = "CAP"


@dataclass(frozen=True)
class ItemFilter:
    """Allowed values per item column, and the cap per value of a column."""

    allowed: dict[str, frozenset[str]] = field(default_factory=dict)
    caps: dict[str, int] = field(default_factory=dict)
    separators: dict[str, str] = field(default_factory=dict)

    @property
    def restricts(self) -> bool:
        return bool(self.allowed)

    def accepts(self, record: Mapping[str, Any]) -> bool:
        """Return whether an item's raw record has an allowed value in every column."""
        return all(
            not self.allowed[column].isdisjoint(self._values(record, column))
            for column in self.allowed
        )

    def milvus_expression(self, fields: Sequence[str]) -> str:
        """Return a Milvus expression for the allowed values of ``fields``.

        A column goes in only when the collection has it as a field and
        every allowed value is printable text, so that quoting is safe.
        An empty string means no column qualified.
        """
        terms = []
        for column in sorted(self.allowed):
            values = sorted(self.allowed[column])
            if column not in fields or not all(value.isprintable() for value in values):
                continue
            quoted = ", ".join(
                json.dumps(value, ensure_ascii=False) for value in values
            )
            terms.append(f"{column} in [{quoted}]")
        return " and ".join(terms)

    def capped(self, records: Sequence[Mapping[str, Any]], limit: int) -> list[int]:
        """Return the positions to keep, in order, so that no value exceeds its cap."""
        counts: dict[str, Counter[str]] = {column: Counter() for column in self.caps}
        kept = []
        for position, record in enumerate(records):
            if len(kept) == limit:
                break
            values = {column: str(record.get(column, "")) for column in self.caps}
            if any(counts[c][v] >= self.caps[c] for c, v in values.items()):
                continue
            for column, value in values.items():
                counts[column][value] += 1
            kept.append(position)
        return kept

    def _values(self, record: Mapping[str, Any], column: str) -> set[str]:
        raw = record.get(column)
        if raw is None:
            return set()
        separator = self.separators.get(column)
        parts = str(raw).split(separator) if separator else [str(raw)]
        return {part.strip() for part in parts}


def parse_item_filter(
    raw_filter: bytes | None, raw_cap: bytes | None, items: EntityTable
) -> ItemFilter:
    """Parse the optional ``FILTER`` and ``CAP`` inputs against the item columns."""
    columns = items.stored_columns
    allowed = {}
    for column, values in _object(raw_filter, FILTER_INPUT, columns).items():
        if not isinstance(values, list) or not values or not all(
            isinstance(value, (str, int, float)) and not isinstance(value, bool)
            for value in values
        ):
            raise InvalidInputError(
                f"{FILTER_INPUT} column {column!r} has {values!r}; send a non-empty "
                'list of values, such as {"' + column + '": ["a", "b"]}',
                input_name=FILTER_INPUT,
            )
        allowed[column] = frozenset(str(value) for value in values)
    caps = {}
    for column, cap in _object(raw_cap, CAP_INPUT, columns).items():
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise InvalidInputError(
                f"{CAP_INPUT} column {column!r} has {cap!r}; send a whole number of 1 "
                "or more, the most results that may share one value",
                input_name=CAP_INPUT,
            )
        caps[column] = cap
    separators = {
        spec.name: spec.separator for spec in items.features if spec.multi_valued
    }
    return ItemFilter(allowed, caps, separators)


def _object(raw: bytes | None, name: str, columns: list[str]) -> dict[str, Any]:
    if raw is None:
        return {}
    parsed = parse_json_object(
        raw, name, hint=f"send a JSON object keyed by item column, one of {columns}"
    )
    unknown = sorted(set(parsed) - set(columns))
    if unknown:
        raise InvalidInputError(
            f"{name} names unknown item column(s) {unknown}; the item columns are {columns}",
            input_name=name,
        )
    return parsed
