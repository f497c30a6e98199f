"""User and item lookup, recall and rank over Triton gRPC, against the real stack."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ecrs.errors import InvalidInputError, NotFoundError
from ecrs.serving.filters import ItemFilter
from ecrs.serving.onnx_models import OnnxModels
from ecrs.stores.vector_store import VectorStore

pytestmark = pytest.mark.integration


def user_ids(dataset):
    return dataset.users[dataset.schema.users.id].tolist()


def item_ids(dataset):
    return dataset.items[dataset.schema.items.id].tolist()


def interactions_of(dataset, user_id):
    spec = dataset.schema.interactions
    frame = dataset.interactions
    return frame[frame[spec.user_id] == user_id]


def stored_record(frame, id_column, entity_id):
    row = frame.set_index(id_column).loc[entity_id]
    return {key: str(value) for key, value in row.items() if value is not None}


def test_user_lookup_returns_features_and_recent_items(client, small_dataset):
    user_id = user_ids(small_dataset)[0]
    profile = client.user(user_id)
    schema = small_dataset.schema
    assert profile.features == stored_record(small_dataset.users, schema.users.id, user_id)
    own = interactions_of(small_dataset, user_id)
    latest = own.sort_values([schema.interactions.timestamp, schema.interactions.item_id])
    expected = list(dict.fromkeys(latest[schema.interactions.item_id].tolist()[::-1]))
    assert profile.recent_items == expected[: len(profile.recent_items)]
    assert profile.recent_items


def test_user_lookup_of_unknown_id_is_not_found(client):
    with pytest.raises(NotFoundError, match="'nobody-here'"):
        client.user("nobody-here")


def test_item_lookup_lists_missing_ids(client, small_dataset):
    known = item_ids(small_dataset)[:3]
    found = client.items([known[0], "no-such-item", known[1], known[2]])
    assert list(found.items) == known
    assert found.missing == ["no-such-item"]
    schema = small_dataset.schema
    expected = stored_record(small_dataset.items, schema.items.id, known[0])
    assert found.items[known[0]] == expected


@pytest.mark.parametrize(
    "ids, message",
    [
        ([], "empty"),
        ([f"i{n}" for n in range(1001)], "at most 1000"),
        (["x" * 257], "at most 256 bytes"),
    ],
)
def test_item_lookup_rejects_bad_id_lists(client, small_dataset, ids, message):
    with pytest.raises(InvalidInputError, match=message):
        client.items(ids)
    assert client.items(item_ids(small_dataset)[:1]).items


def test_recall_honours_the_candidate_count_and_sorts(client, small_dataset):
    candidates = client.recall(user_id=user_ids(small_dataset)[0], candidates=37)
    assert len(candidates) == 37
    similarities = [value for _, value in candidates]
    assert similarities == sorted(similarities, reverse=True)
    assert len({item_id for item_id, _ in candidates}) == 37


def test_recall_excludes_seen_items(client, small_dataset):
    spec = small_dataset.schema.interactions
    heaviest = small_dataset.interactions[spec.user_id].value_counts().index[0]
    seen = set(interactions_of(small_dataset, heaviest)[spec.item_id])
    candidates = client.recall(user_id=heaviest, candidates=50, exclude_seen=True)
    assert len(candidates) == 50
    assert not {item_id for item_id, _ in candidates} & seen


def test_recall_for_a_new_user(client, small_dataset):
    row = small_dataset.users.iloc[1]
    features = {name: row[name] for name in small_dataset.schema.users.feature_names}
    assert len(client.recall(user_features=features, candidates=10)) == 10


@pytest.mark.parametrize("count", [0, -3, 1001])
def test_recall_count_out_of_range_names_the_range(client, small_dataset, count):
    with pytest.raises(InvalidInputError, match="from 1 to 1000"):
        client.recall(user_id=user_ids(small_dataset)[0], candidates=count)
    assert len(client.recall(user_id=user_ids(small_dataset)[0], candidates=3)) == 3


def test_rank_sorts_a_callers_list_like_recommend(client, small_dataset):
    user_id = user_ids(small_dataset)[0]
    recommended = client.recommend(user_id=user_id, top_n=10)
    shuffled = [item.item_id for item in recommended][::-1] + ["no-such-item"]
    ranked = client.rank(shuffled, user_id=user_id)
    assert [item_id for item_id, _ in ranked.items] == [
        item.item_id for item in recommended
    ]
    for (_, score), item in zip(ranked.items, recommended):
        assert score == pytest.approx(item.score, abs=1e-4)
    assert ranked.missing == ["no-such-item"]


def test_rank_for_unknown_user_is_not_found(client, small_dataset):
    with pytest.raises(NotFoundError):
        client.rank(item_ids(small_dataset)[:2], user_id="nobody-here")


def test_client_cli_runs_each_lookup(run_client, small_dataset):
    user_id = user_ids(small_dataset)[0]
    items = item_ids(small_dataset)[:2]
    user = run_client("user", user_id, "--json")
    assert user.returncode == 0, user.stderr
    assert "recent_items" in json.loads(user.stdout)
    looked_up = run_client("items", *items, "missing-id")
    assert looked_up.returncode == 0, looked_up.stderr
    assert "not found: missing-id" in looked_up.stderr
    recall = run_client("recall", "--user-id", user_id, "--candidates", "5", "--json")
    assert len(json.loads(recall.stdout)) == 5
    rank = run_client("rank", "--user-id", user_id, *items)
    assert rank.returncode == 0, rank.stderr
    assert len(rank.stdout.splitlines()) == 2
    unknown = run_client("user", "nobody-here")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("ecrs-client: error: NOT_FOUND")


def test_filter_and_cap_keep_top_n(client, small_dataset):
    """Every result has the category asked for and at most two share a brand."""
    user_id = user_ids(small_dataset)[0]
    catalogue = small_dataset.items.set_index(small_dataset.schema.items.id)
    category = catalogue["category"].value_counts().index[0]
    items = client.recommend(
        user_id=user_id,
        top_n=5,
        filters={"category": [category]},
        cap={"brand": 2},
    )
    assert len(items) == min(5, int((catalogue["category"] == category).sum()))
    assert {item.details["category"] for item in items} == {category}
    brands = [item.details["brand"] for item in items]
    assert max(brands.count(brand) for brand in brands) <= 2


def test_brand_cap_alone_keeps_top_n_full(client, small_dataset):
    # The test catalogue has 10 brands, so a cap of 3 can fill 20 results.
    items = client.recommend(user_id=user_ids(small_dataset)[0], top_n=20, cap={"brand": 3})
    brands = [item.details["brand"] for item in items]
    assert len(brands) == 20
    assert max(brands.count(brand) for brand in brands) <= 3


def test_filter_on_an_unknown_column_is_invalid(client, small_dataset):
    with pytest.raises(InvalidInputError, match="unknown item column"):
        client.recommend(user_id=user_ids(small_dataset)[0], filters={"colour": ["red"]})
    assert len(client.recommend(user_id=user_ids(small_dataset)[0], top_n=3)) == 3


def test_feature_filter_runs_inside_the_search(stack, loaded, small_dataset):
    """The collection stores each single-valued item feature, and a search
    with the expression a FILTER makes returns exactly the matching items."""
    catalogue = small_dataset.items.set_index(small_dataset.schema.items.id)
    category = catalogue["category"].value_counts().index[0]
    expected = set(catalogue.index[catalogue["category"] == category])
    store = VectorStore(stack.stores)
    try:
        assert store.filter_fields(loaded.collection) == ["brand", "shop_id", "category"]
        expression = ItemFilter({"category": frozenset([category])}).milvus_expression(
            store.filter_fields(loaded.collection)
        )
        dim = OnnxModels(stack.model_repository, loaded.version).dim
        vector = np.ones(dim, dtype=np.float32)
        ids, _ = store.search(loaded.collection, vector, len(catalogue), expression=expression)
        # Quotes and backslashes in a value are escaped, not read as syntax.
        odd = ItemFilter({"brand": frozenset(['say "hi" \\ now'])}).milvus_expression(
            ["brand"]
        )
        odd_ids, _ = store.search(loaded.collection, vector, 10, expression=odd)
    finally:
        store.close()
    assert set(ids) == expected
    assert odd_ids == []


def test_attribute_filter_runs_after_the_search(client, small_dataset):
    """title is an attribute, not a collection field: it is checked on the
    stored records after the search, and the one matching item is found."""
    catalogue = small_dataset.items.set_index(small_dataset.schema.items.id)
    item_id = catalogue.index[7]
    title = catalogue.loc[item_id, "title"]
    items = client.recommend(
        user_id=user_ids(small_dataset)[0], top_n=5, filters={"title": [title]}
    )
    matching = set(catalogue.index[catalogue["title"] == title])
    assert {item.item_id for item in items} == matching
    assert len(items) == min(5, len(matching))
