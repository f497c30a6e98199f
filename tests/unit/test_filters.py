"""Item filters and caps, alone and in the request path with stand-in stores."""

import json

import numpy as np
import pytest

from ecrs.data.schema import DatasetSchema
from ecrs.errors import InvalidInputError
from ecrs.features.encoder import FeatureEncoder
from ecrs.serving.filters import ItemFilter, parse_item_filter
from ecrs.serving.recommender import Recommender
from ecrs.stores.vector_store import filter_columns, filter_values

SCHEMA = DatasetSchema.from_dict(
    {
        "name": "toy",
        "users": {"file": "u.csv", "id": "user_id", "features": ["age"]},
        "items": {
            "file": "i.csv",
            "id": "item_id",
            "features": [
                "brand",
                "category",
                {"name": "tags", "multi_valued": True, "separator": "|"},
            ],
            "attributes": ["title"],
        },
        "interactions": {"file": "x.csv"},
    }
)


def parse(filters=None, cap=None):
    encode = lambda value: None if value is None else json.dumps(value).encode()
    return parse_item_filter(encode(filters), encode(cap), SCHEMA.items)


def test_filter_accepts_listed_values_and_any_tag():
    item_filter = parse({"category": ["shoes", "bags"], "tags": ["sale"]})
    assert item_filter.accepts({"category": "shoes", "tags": "new|sale"})
    assert not item_filter.accepts({"category": "hats", "tags": "sale"})
    assert not item_filter.accepts({"category": "bags", "tags": "new"})
    assert not item_filter.accepts({"tags": "sale"})


def test_cap_keeps_order_and_limits_each_value():
    records = [{"brand": b} for b in ("a", "a", "b", "a", "c", "b")]
    assert parse(cap={"brand": 1}).capped(records, 10) == [0, 2, 4]
    assert parse(cap={"brand": 2}).capped(records, 3) == [0, 1, 2]


@pytest.mark.parametrize(
    "filters, cap, message",
    [
        ({"colour": ["red"]}, None, "unknown item column"),
        ({"brand": []}, None, "non-empty list"),
        ({"brand": "acme"}, None, "non-empty list"),
        (None, {"brand": 0}, "whole number of 1 or more"),
        (None, {"brand": True}, "whole number"),
        (["brand"], None, "must be a JSON object"),
    ],
)
def test_bad_filters_are_invalid(filters, cap, message):
    with pytest.raises(InvalidInputError, match=message):
        parse(filters, cap)


def test_filter_that_is_not_json_is_invalid():
    with pytest.raises(InvalidInputError, match="not valid UTF-8 JSON"):
        parse_item_filter(b"{brand", None, SCHEMA.items)


class Features:
    def __init__(self, items):
        self.items = items

    def get_user_with_items(self, user_id, recent, *, all_items=False):
        return {"age": "30"}, []

    def get_items_raw(self, item_ids):
        return [json.dumps(self.items[i]).encode() for i in item_ids]


class Vectors:
    """Items ranked by number; records each search's limit and expression.

    With ``fields``, the collection has those filter fields, and a search
    with an expression keeps the ids that ``matches`` accepts, as Milvus
    would keep the rows matching the expression.
    """

    def __init__(self, count, fields=(), matches=None):
        self.ids = [f"i{n:03d}" for n in range(count)]
        self.fields = list(fields)
        self.matches = matches
        self.limits = []
        self.expressions = []

    def search(self, name, vector, limit, search_params=None, expression=""):
        self.limits.append(limit)
        self.expressions.append(expression)
        ids = self.ids
        if expression:
            ids = [item_id for item_id in ids if self.matches(item_id)]
        ids = ids[:limit]
        return ids, np.linspace(1.0, 0.0, len(ids)).astype(np.float32)[: len(ids)]

    def filter_fields(self, name):
        return self.fields


def recommender(vectors, items):
    encoder = FeatureEncoder.fit(
        SCHEMA,
        users=[{"age": "30"}],
        items=list(items.values()),
        trained_user_ids=["u1"],
        trained_item_ids=list(items),
    )
    return Recommender(
        encoder=encoder,
        features=Features(items),
        vectors=vectors,
        collection="items_v1",
        user_tower=lambda rows: np.ones((rows.shape[0], 4), np.float32),
        ranker=lambda users, items_: np.full(len(items_), 0.5, np.float32),
        candidates=10,
    )


def test_strict_filter_widens_search():
    # Only every 20th of 500 items is a shoe: 10 candidates need a wide search.
    vectors = Vectors(500)
    items = {
        item_id: {"brand": "b", "category": "shoes" if n % 20 == 0 else "hats"}
        for n, item_id in enumerate(vectors.ids)
    }
    result = recommender(vectors, items).recommend(
        user_id="u1", top_n=5, item_filter=parse({"category": ["shoes"]})
    )
    assert len(result.item_ids) == 5
    assert all(items[item]["category"] == "shoes" for item in result.item_ids)
    # 10 qualifying candidates need 200 items; the 640-item search finds
    # the collection's end.
    assert vectors.limits == [10, 40, 160, 640]


def test_scarce_filter_returns_no_padding():
    vectors = Vectors(30)
    items = {
        item_id: {"brand": "b", "category": "shoes" if n < 2 else "hats"}
        for n, item_id in enumerate(vectors.ids)
    }
    result = recommender(vectors, items).recommend(
        user_id="u1", top_n=5, item_filter=parse({"category": ["shoes"]})
    )
    assert result.item_ids == ["i000", "i001"]


def test_cap_holds_while_the_result_stays_full():
    vectors = Vectors(40)
    items = {
        item_id: {"brand": "ab"[n % 2] if n < 20 else f"brand{n}", "category": "x"}
        for n, item_id in enumerate(vectors.ids)
    }
    result = recommender(vectors, items).recommend(
        user_id="u1", top_n=6, item_filter=ItemFilter(caps={"brand": 2})
    )
    brands = [items[item]["brand"] for item in result.item_ids]
    assert len(brands) == 6
    assert max(brands.count(brand) for brand in brands) <= 2


def test_field_filter_goes_into_one_search():
    # The same strict filter as above, on a collection with a category field.
    shoes = {f"i{n:03d}" for n in range(0, 500, 20)}
    vectors = Vectors(500, fields=["brand", "category"], matches=shoes.__contains__)
    items = {
        item_id: {"brand": "b", "category": "shoes" if item_id in shoes else "hats"}
        for item_id in vectors.ids
    }
    result = recommender(vectors, items).recommend(
        user_id="u1", top_n=5, item_filter=parse({"category": ["shoes"]})
    )
    assert len(result.item_ids) == 5
    assert set(result.item_ids) <= shoes
    assert vectors.expressions == ['category in ["shoes"]']
    assert vectors.limits == [10]


@pytest.mark.parametrize(
    ("filters", "fields", "expression"),
    [
        ({"category": ["shoes", "bags"]}, ["category"], 'category in ["bags", "shoes"]'),
        (
            {"brand": ["a"], "category": ["x"]},
            ["brand", "category"],
            'brand in ["a"] and category in ["x"]',
        ),
        ({"title": ["Red shoe"]}, ["brand", "category"], ""),
        ({"tags": ["sale"]}, ["brand", "category"], ""),
        ({"brand": ['say "hi" \\ now']}, ["brand"], 'brand in ["say \\"hi\\" \\\\ now"]'),
        ({"brand": ["two\nlines"]}, ["brand"], ""),
        ({"brand": ["Bäcker"]}, ["brand"], 'brand in ["Bäcker"]'),
    ],
)
def test_milvus_expression_covers_field_columns(filters, fields, expression):
    assert parse(filters).milvus_expression(fields) == expression


def test_filter_columns_are_single_valued_features():
    assert filter_columns(SCHEMA.items) == ["brand", "category"]


def test_filter_values_fill_missing_with_empty_text():
    record = {"brand": "acme", "category": float("nan"), "title": "x"}
    assert filter_values(record, ["brand", "category"]) == {"brand": "acme", "category": ""}
    assert filter_values({"brand": 7}, ["brand"]) == {"brand": "7"}
