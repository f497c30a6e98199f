"""The request path with in-memory stand-ins for Redis, Milvus and the models."""

import json

import numpy as np
import pytest

from ecrs.data.schema import DatasetSchema
from ecrs.errors import InvalidInputError, NotFoundError
from ecrs.features.encoder import FIRST_VALUE_ID, OOV_ID, FeatureEncoder
from ecrs.serving.item_cache import ItemCache
from ecrs.serving.recommender import Recommender, parse_user_features
from ecrs.serving.stages import STAGES, TOTAL
from ecrs.serving.requests import parse_item_ids, parse_request
from ecrs.serving.scoring import Scoring

FEATURES = ["age", "sex"]
SCHEMA = DatasetSchema.from_dict(
    {
        "name": "toy",
        "users": {"file": "users.csv", "id": "user_id", "features": FEATURES},
        "items": {"file": "items.csv", "id": "item_id", "features": ["brand"]},
        "interactions": {"file": "interactions.csv"},
    }
)


def fit(history_length=0):
    return FeatureEncoder.fit(
        SCHEMA,
        users=[{"age": "18-24", "sex": "f"}, {"age": "25-34", "sex": "m"}],
        items=[{"brand": "acme"}, {"brand": "zeta"}],
        trained_user_ids=["u1"],
        trained_item_ids=["i1", "i2", "i3"],
        history_length=history_length,
    )


class FakeFeatureStore:
    def __init__(self, users, items, interactions=None):
        self.users = users
        self.items = items
        self.interactions = interactions or {}
        self.generation = 0
        self.items_read = []

    def items_generation(self):
        return self.generation

    def get_user_with_items(self, user_id, recent, *, all_items=False):
        items = self.interactions.get(user_id, [])
        return self.users.get(user_id), items if all_items else items[:recent]

    def get_items_raw(self, item_ids):
        self.items_read.extend(item_ids)
        return [
            json.dumps(self.items[i]).encode() if i in self.items else None
            for i in item_ids
        ]


class FakeVectorStore:
    def __init__(self, ids, similarities):
        self.ids = ids
        self.similarities = np.asarray(similarities, dtype=np.float32)
        self.searches = []
        self.expressions = []
        self.fields = []

    def search(self, name, vector, limit, search_params=None, expression=""):
        self.searches.append((name, limit))
        self.expressions.append(expression)
        return self.ids[:limit], self.similarities[:limit]

    def filter_fields(self, name):
        return self.fields


def recommender(
    vectors, items=None, scores=None, interactions=None, history=0, item_cache=None
):
    items = items or {
        "i1": {"brand": "acme"},
        "i2": {"brand": "zeta"},
        "i3": {"brand": "acme"},
    }
    by_item = scores or {"i1": 0.2, "i2": 0.9, "i3": 0.5}
    encoder = fit(history)
    brand_index = encoder.items.fields[1].index()
    index_to_item = {}

    def ranker(user_rows, item_rows):
        assert user_rows.shape[0] == item_rows.shape[0]
        return np.array(
            [by_item[index_to_item[tuple(row)]] for row in item_rows], np.float32
        )

    for item_id, raw in items.items():
        row = encoder.encode_items([item_id], [raw])[0]
        index_to_item[tuple(row)] = item_id
    assert brand_index
    return Recommender(
        encoder=encoder,
        features=FakeFeatureStore(
            {"u1": {"age": "18-24", "sex": "f"}}, items, interactions
        ),
        vectors=vectors,
        collection="items_v1",
        user_tower=lambda rows: np.ones((rows.shape[0], 4), np.float32),
        ranker=ranker,
        candidates=3,
        item_cache=item_cache,
    )


def test_recommend_sorts_by_ranker_score():
    vectors = FakeVectorStore(["i1", "i2", "i3"], [0.9, 0.8, 0.7])
    result = recommender(vectors).recommend(user_id="u1", top_n=2)
    assert result.item_ids == ["i2", "i3"]
    # Without a recall weight the score is DeepFM's logit.
    np.testing.assert_allclose(result.scores, [np.log(0.9 / 0.1), 0.0], atol=1e-6)
    assert json.loads(result.details[0]) == {"brand": "zeta"}
    assert vectors.searches == [("items_v1", 3)]


def test_removed_item_is_dropped_not_an_error():
    vectors = FakeVectorStore(["i1", "gone", "i3"], [0.9, 0.8, 0.7])
    result = recommender(vectors).recommend(user_id="u1", top_n=3)
    assert result.item_ids == ["i3", "i1"]


def test_unknown_user_raises_not_found_naming_id():
    vectors = FakeVectorStore(["i1"], [0.9])
    with pytest.raises(NotFoundError, match="'nobody'"):
        recommender(vectors).recommend(user_id="nobody", top_n=1)


def test_new_user_gets_unknown_id():
    rec = recommender(FakeVectorStore(["i1"], [0.9]))
    row = rec.user(user_features={"age": "25-34"}).row
    assert row[0, 0] == OOV_ID
    assert row[0, 1] >= FIRST_VALUE_ID


def test_new_user_unseen_value_is_reported():
    rec = recommender(FakeVectorStore(["i1", "i2"], [0.9, 0.8]))
    result = rec.recommend(user_features={"age": "99+", "sex": "f"}, top_n=2)
    assert result.unknown_features == ["age"]
    assert result.item_ids == ["i2", "i1"]


def test_known_user_reports_no_unknown_features():
    result = recommender(FakeVectorStore(["i1"], [0.9])).recommend(user_id="u1", top_n=1)
    assert result.unknown_features == []


def test_empty_candidates_give_empty_result():
    result = recommender(FakeVectorStore([], [])).recommend(user_id="u1", top_n=5)
    assert result.item_ids == []
    assert result.scores.shape == (0,)


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"not json", "not valid UTF-8 JSON"),
        (b"\xff\xfe", "not valid UTF-8 JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"agee": "18-24"}', "unknown feature"),
        (b'{"age": {"x": 1}}', "values must be strings or numbers"),
        (b'{"age": true}', "values must be strings or numbers"),
        (b"{}", "no feature values"),
        (b'{"age": null}', "no feature values"),
    ],
)
def test_parse_user_features_rejects(raw, message):
    with pytest.raises(InvalidInputError, match=message) as info:
        parse_user_features(raw, FEATURES)
    assert info.value.input_name == "USER_FEATURES"


def test_parse_user_features_accepts_numbers_as_text():
    assert parse_user_features(b'{"age": 25, "sex": "f"}', FEATURES) == {
        "age": "25",
        "sex": "f",
    }


def request(**inputs):
    return parse_request(
        {
            name: None if value is None else np.array(value, dtype=object)
            for name, value in inputs.items()
        },
        feature_names=FEATURES,
        default_top_n=10,
        max_top_n=100,
    )


def test_parse_request_known_user_with_default_top_n():
    parsed = request(USER_ID=[b"u1"])
    assert parsed.user_id == "u1"
    assert parsed.top_n == 10


def test_parse_request_requires_exactly_one_user_input():
    with pytest.raises(InvalidInputError, match="exactly one"):
        request()
    with pytest.raises(InvalidInputError, match="exactly one"):
        request(USER_ID=[b"u1"], USER_FEATURES=[b'{"age": "1"}'])


@pytest.mark.parametrize("top_n", [0, -3, 101])
def test_parse_request_rejects_top_n_out_of_range(top_n):
    with pytest.raises(InvalidInputError, match="TOP_N is") as info:
        parse_request(
            {
                "USER_ID": np.array([b"u1"], dtype=object),
                "TOP_N": np.array([top_n], np.int32),
            },
            feature_names=FEATURES,
            default_top_n=10,
            max_top_n=100,
        )
    assert info.value.input_name == "TOP_N"


def test_parse_request_rejects_bad_user_id():
    with pytest.raises(InvalidInputError, match="not valid UTF-8"):
        request(USER_ID=[b"\xff\xfe"])
    with pytest.raises(InvalidInputError, match="empty"):
        request(USER_ID=[b"  "])


def test_exclude_seen_keeps_n():
    vectors = FakeVectorStore(["i2", "i1", "i3"], [0.9, 0.8, 0.7])
    rec = recommender(vectors, interactions={"u1": ["i2"]})
    result = rec.recommend(user_id="u1", top_n=3, exclude_seen=True)
    assert result.item_ids == ["i3", "i1"]
    # One extra candidate is searched for each item left out.
    assert vectors.searches[-1] == ("items_v1", 4)


def test_without_exclude_seen_interacted_items_stay():
    vectors = FakeVectorStore(["i2", "i1", "i3"], [0.9, 0.8, 0.7])
    rec = recommender(vectors, interactions={"u1": ["i2"]})
    assert "i2" in rec.recommend(user_id="u1", top_n=3).item_ids


def test_known_user_row_has_recent_items():
    vectors = FakeVectorStore(["i1"], [0.9])
    rec = recommender(vectors, interactions={"u1": ["i3", "i1", "i2"]}, history=2)
    row = rec.user(user_id="u1").row[0]
    assert rec.encoder.users.history_length == 2
    assert list(row[-2:]) == rec.encoder.users.history_ids(["i3", "i1"])
    assert min(row[-2:]) >= FIRST_VALUE_ID


def test_new_user_has_an_empty_history():
    rec = recommender(FakeVectorStore(["i1"], [0.9]), history=3)
    row = rec.user(user_features={"age": "25-34"}).row[0]
    assert list(row[-3:]) == [0, 0, 0]


def test_recall_weight_adds_similarity():
    vectors = FakeVectorStore(["i1", "i2", "i3"], [0.9, 0.1, 0.7])
    rec = recommender(vectors)
    rec.scoring = Scoring(recall_weight=10.0)
    result = rec.recommend(user_id="u1", top_n=3)
    # logit(0.2) + 9 = 7.61, logit(0.9) + 1 = 3.20, logit(0.5) + 7 = 7.0
    assert result.item_ids == ["i1", "i3", "i2"]
    np.testing.assert_allclose(
        result.scores, [np.log(0.25) + 9, 7.0, np.log(9) + 1], atol=1e-5
    )


def test_item_ids_keep_order_and_drop_repeats():
    ids = np.array([b"b", b"a", b"b"], dtype=np.object_)
    assert parse_item_ids(ids) == ["b", "a"]


@pytest.mark.parametrize(
    "ids, message",
    [
        (np.array([], dtype=np.object_), "missing or empty"),
        (np.array([b"\xff"], dtype=np.object_), "not valid UTF-8"),
        (np.array([b" "], dtype=np.object_), "empty id"),
        (np.array([b"x" * 257], dtype=np.object_), "257 bytes long"),
        (np.array([b"i"] * 1001, dtype=np.object_), "at most 1000"),
    ],
)
def test_bad_item_ids_are_invalid(ids, message):
    with pytest.raises(InvalidInputError, match=message):
        parse_item_ids(ids)


def test_missing_required_feature_is_named():
    with pytest.raises(InvalidInputError, match=r"\['sex'\]"):
        parse_user_features(b'{"age": "25-34"}', ["age", "sex"], required=["age", "sex"])
    with pytest.raises(InvalidInputError, match=r"\['sex'\]"):
        parse_user_features(b'{"age": "25-34", "sex": " "}', ["age", "sex"], required=["sex"])
    assert parse_user_features(b'{"age": "25-34"}', ["age", "sex"], required=["age"]) == {
        "age": "25-34"
    }


def test_item_cache_skips_second_read():
    vectors = FakeVectorStore(["i1", "i2", "i3"], [0.9, 0.8, 0.7])
    rec = recommender(vectors, item_cache=ItemCache())
    first = rec.recommend(user_id="u1", top_n=2)
    second = rec.recommend(user_id="u1", top_n=2)
    assert second.item_ids == first.item_ids == ["i2", "i3"]
    np.testing.assert_allclose(second.scores, first.scores)
    assert second.details == first.details
    assert rec.features.items_read == ["i1", "i2", "i3"]


def test_item_cache_empties_on_new_generation():
    vectors = FakeVectorStore(["i1", "i2"], [0.9, 0.8])
    rec = recommender(vectors, item_cache=ItemCache())
    rec.recommend(user_id="u1", top_n=2)
    # A new title changes the details but not the encoded row.
    rec.features.items["i2"] = {"brand": "zeta", "title": "new"}
    rec.features.generation += 1
    result = rec.recommend(user_id="u1", top_n=2)
    assert json.loads(result.details[0]) == {"brand": "zeta", "title": "new"}
    assert rec.features.items_read == ["i1", "i2", "i1", "i2"]


def test_item_cache_drops_removed_item():
    vectors = FakeVectorStore(["i1", "gone", "i3"], [0.9, 0.8, 0.7])
    rec = recommender(vectors, item_cache=ItemCache())
    for _ in range(2):
        assert rec.recommend(user_id="u1", top_n=3).item_ids == ["i3", "i1"]


def test_full_item_cache_still_returns_new_items():
    vectors = FakeVectorStore(["i1", "i2", "i3"], [0.9, 0.8, 0.7])
    rec = recommender(vectors, item_cache=ItemCache(max_items=1))
    for _ in range(2):
        assert rec.recommend(user_id="u1", top_n=3).item_ids == ["i2", "i3", "i1"]
    assert len(rec.item_cache) == 1


def test_stage_timer_records_every_stage():
    rec = recommender(FakeVectorStore(["i1", "i2"], [0.9, 0.8]))
    with rec.timer.request():
        rec.recommend(user_id="u1", top_n=2)
    times = rec.timer.last()
    assert set(times) == set(STAGES)
    assert all(value >= 0 for value in times.values())
    stages = sum(value for stage, value in times.items() if stage != TOTAL)
    assert times[TOTAL] >= stages


def test_stage_timer_outside_request_records_nothing():
    rec = recommender(FakeVectorStore(["i1"], [0.9]))
    rec.recommend(user_id="u1", top_n=1)
    assert rec.timer.last() == {}
