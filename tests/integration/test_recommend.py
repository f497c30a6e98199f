"""Recommendations from the real stack, checked against the data and the
exported models run offline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ecrs.errors import InvalidInputError, NotFoundError
from ecrs.serving.onnx_models import OnnxModels
from ecrs.serving.recommender import Recommender
from ecrs.stores.feature_store import FeatureStore
from ecrs.stores.vector_store import VectorStore

pytestmark = pytest.mark.integration

# The console script installed beside this interpreter.


def known_user(dataset):
    return dataset.users[dataset.schema.users.id].iloc[0]


def new_user_features(dataset):
    row = dataset.users.iloc[1]
    return {name: row[name] for name in dataset.schema.users.feature_names}


def test_known_user_gets_top_n_items(client, small_dataset):
    items = client.recommend(user_id=known_user(small_dataset), top_n=10)
    assert len(items) == 10
    catalogue = small_dataset.items.set_index(small_dataset.schema.items.id)
    scores = [item.score for item in items]
    assert scores == sorted(scores, reverse=True)
    assert len({item.item_id for item in items}) == 10
    for item in items:
        raw = catalogue.loc[item.item_id]
        expected = {key: value for key, value in raw.items() if value is not None}
        assert item.details == expected


def test_default_top_n_is_ten(client, small_dataset):
    assert len(client.recommend(user_id=known_user(small_dataset))) == 10


def test_new_user_gets_recommendations(client, small_dataset):
    items = client.recommend(user_features=new_user_features(small_dataset), top_n=5)
    assert len(items) == 5
    scores = [item.score for item in items]
    assert all(np.isfinite(scores))
    assert scores == sorted(scores, reverse=True)


def test_new_user_unseen_value_is_reported(client, small_dataset):
    features = new_user_features(small_dataset)
    first = small_dataset.schema.users.feature_names[0]
    features[first] = "a value never seen in training"
    items = client.recommend(user_features=features, top_n=5)
    assert len(items) == 5
    assert items.unknown_features == [first]


def test_known_user_has_no_unknown_features(client, small_dataset):
    items = client.recommend(user_id=known_user(small_dataset), top_n=3)
    assert items.unknown_features == []


def test_unknown_user_is_not_found_and_server_keeps_serving(client, small_dataset):
    with pytest.raises(NotFoundError, match="no-such-user"):
        client.recommend(user_id="no-such-user")
    assert len(client.recommend(user_id=known_user(small_dataset), top_n=3)) == 3


@pytest.mark.parametrize(
    "kwargs, input_name",
    [
        ({"user_features": {"no_such_feature": "x"}}, "USER_FEATURES"),
        ({"user_features": {}}, "USER_FEATURES"),
        ({"user_id": "u000001", "top_n": 0}, "TOP_N"),
        ({"user_id": "u000001", "top_n": 10_000}, "TOP_N"),
        ({"user_id": "u000001", "top_n": -1}, "from 1 to 100"),
        ({"user_features": {"age": ["25-34"]}}, "'age' has value"),
        ({"user_features": {"age": "x" * 70_000}}, "at most 65536"),
        ({"user_id": "u" * 300}, "at most 256 bytes"),
    ],
)
def test_malformed_request_is_invalid_argument(
    client, small_dataset, kwargs, input_name
):
    with pytest.raises(InvalidInputError, match=input_name):
        client.recommend(**kwargs)
    assert len(client.recommend(user_id=known_user(small_dataset), top_n=2)) == 2


def test_new_user_without_required_feature_is_invalid(client, small_dataset):
    """The shop schema requires age and sex of a new user; the error names the
    missing feature, and the next valid request is served."""
    features = new_user_features(small_dataset)
    del features["age"]
    with pytest.raises(InvalidInputError, match=r"required feature\(s\) \['age'\]") as info:
        client.recommend(user_features=features, top_n=3)
    assert info.value.status == "INVALID_ARG"
    assert len(client.recommend(user_features=new_user_features(small_dataset), top_n=3)) == 3


def raw_infer(stack, inputs):
    with grpcclient.InferenceServerClient(stack.triton_grpc_url) as raw:
        return raw.infer("recommend_ensemble", inputs)


def bytes_input(name, values):
    tensor = grpcclient.InferInput(name, [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array(values, dtype=np.object_))
    return tensor


def test_both_user_inputs_is_invalid_argument(stack, loaded, small_dataset):
    inputs = [
        bytes_input("USER_ID", [known_user(small_dataset).encode()]),
        bytes_input("USER_FEATURES", [b'{"sex": "f"}']),
    ]
    with pytest.raises(InferenceServerException) as info:
        raw_infer(stack, inputs)
    assert "INVALID_ARG" in str(info.value.status())
    assert "exactly one" in info.value.message()
    assert_serves_after(stack, small_dataset)


def test_non_utf8_features_are_invalid_argument(stack, loaded, small_dataset):
    with pytest.raises(InferenceServerException) as info:
        raw_infer(stack, [bytes_input("USER_FEATURES", [b"\xff\xfe{"])])
    assert "INVALID_ARG" in str(info.value.status())
    assert "USER_FEATURES" in info.value.message()
    assert_serves_after(stack, small_dataset)


def test_two_user_ids_in_one_request_are_rejected(stack, loaded, small_dataset):
    with pytest.raises(InferenceServerException) as info:
        raw_infer(stack, [bytes_input("USER_ID", [b"a", b"b"])])
    assert "INVALID_ARG" in str(info.value.status())
    assert_serves_after(stack, small_dataset)


def assert_serves_after(stack, dataset):
    """A valid request right after a rejected one gets a full response."""
    result = raw_infer(stack, [bytes_input("USER_ID", [known_user(dataset).encode()])])
    assert len(result.as_numpy("ITEM_IDS")) == 10


@pytest.fixture()
def offline(stack, loaded, small_dataset):
    """The same request path in this process: the served ONNX files run by
    onnxruntime, against the same Redis and Milvus."""
    models = OnnxModels(stack.model_repository, loaded.version)
    return Recommender(
        encoder=models.encoder,
        features=FeatureStore(stack.stores, small_dataset.schema.name),
        vectors=VectorStore(stack.stores),
        collection=loaded.collection,
        user_tower=models.user_tower,
        ranker=models.rank,
        candidates=200,
        scoring=models.scoring,
    )


def test_server_scores_match_offline_models(offline, client, small_dataset):
    """Scores from Triton equal onnxruntime's for the same user and candidates,
    the recall similarity included."""
    for user_id in small_dataset.users[small_dataset.schema.users.id].iloc[:5]:
        served = client.recommend(user_id=user_id, top_n=20)
        row = offline.user(user_id=user_id).row
        expected = offline.rank(row, offline.recall(row), top_n=20)
        np.testing.assert_allclose(
            [item.score for item in served], expected.scores, atol=1e-4, rtol=0
        )
        assert [item.item_id for item in served] == expected.item_ids


def test_served_recommendations_equal_offline_pipeline(offline, client, small_dataset):
    features = new_user_features(small_dataset)
    served = client.recommend(user_features=features, top_n=10)
    expected = offline.recommend(user_features=features, top_n=10)
    assert [item.item_id for item in served] == expected.item_ids
    np.testing.assert_allclose(
        [item.score for item in served], expected.scores, atol=1e-4
    )


def interacted_items(dataset, user_id):
    spec = dataset.schema.interactions
    rows = dataset.interactions[dataset.interactions[spec.user_id] == user_id]
    return set(rows[spec.item_id])


def test_exclude_seen_keeps_top_n(client, small_dataset):
    spec = small_dataset.schema.interactions
    heaviest = small_dataset.interactions[spec.user_id].value_counts().index[0]
    seen = interacted_items(small_dataset, heaviest)
    items = client.recommend(user_id=heaviest, top_n=20, exclude_seen=True)
    assert len(items) == 20
    assert not {item.item_id for item in items} & seen


def test_exclude_seen_matches_the_offline_pipeline(offline, client, small_dataset):
    user_id = known_user(small_dataset)
    served = client.recommend(user_id=user_id, top_n=10, exclude_seen=True)
    expected = offline.recommend(user_id=user_id, top_n=10, exclude_seen=True)
    assert [item.item_id for item in served] == expected.item_ids


def test_known_user_is_served_with_recent_items(offline, small_dataset):
    """The user row read from Redis ends with the user's latest items."""
    user_id = known_user(small_dataset)
    length = offline.encoder.users.history_length
    assert length > 0
    spec = small_dataset.schema.interactions
    own = small_dataset.interactions[small_dataset.interactions[spec.user_id] == user_id]
    latest = own.sort_values([spec.timestamp, spec.item_id])[spec.item_id].tolist()
    # Most recent first, each item once, at its latest interaction.
    distinct = list(dict.fromkeys(latest[::-1]))
    expected = offline.encoder.users.history_ids(distinct[:length])
    row = offline.user(user_id=user_id).row[0]
    assert list(row[-length:][: len(expected)]) == expected


def test_client_cli_prints_table(run_client, small_dataset):
    result = run_client("recommend", "--user-id", known_user(small_dataset), "--top-n", "3")
    assert result.returncode == 0, result.stderr
    assert "served by version 1 (collection ecrs_items_v1)" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["#", "item_id", "score"]
    assert len(lines) == 2 + 3


def test_client_cli_new_user_json(run_client, small_dataset):
    features = json.dumps(new_user_features(small_dataset))
    result = run_client("recommend", "--features", features, "--top-n", "4", "--json")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 4


def test_client_cli_notes_unseen_value(run_client, small_dataset):
    features = new_user_features(small_dataset)
    first = small_dataset.schema.users.feature_names[0]
    features[first] = "never-seen"
    result = run_client("recommend", "--features", json.dumps(features))
    assert result.returncode == 0, result.stderr
    assert f"{first}='never-seen'" in result.stderr
    assert "note: values not seen in training" in result.stderr


def test_client_cli_unknown_user_one_line_error(run_client):
    result = run_client("recommend", "--user-id", "ghost")
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("ecrs-client: error: NOT_FOUND: ")
    assert "'ghost'" in lines[0]


def test_client_cli_json_error_is_json(run_client):
    result = run_client("recommend", "--user-id", "ghost", "--json")
    assert result.returncode == 1
    error = json.loads(result.stdout)["error"]
    assert error["status"] == "NOT_FOUND"
    assert "'ghost'" in error["message"]
    assert result.stderr.startswith("ecrs-client: error: NOT_FOUND: ")


def test_features_change_the_recommendations(client, small_dataset):
    """A new user's features matter: their list differs from that of a profile
    whose every value is unknown to the models (the least a request can tell).
    A profile with no values at all is rejected instead of served silently."""
    features = new_user_features(small_dataset)
    with pytest.raises(InvalidInputError, match="USER_FEATURES") as empty:
        client.recommend(user_features={}, top_n=10)
    assert empty.value.status == "INVALID_ARG"
    unknown = {name: "never-seen-value" for name in features}
    informed = [item.item_id for item in client.recommend(user_features=features, top_n=10)]
    uninformed = client.recommend(user_features=unknown, top_n=10)
    assert sorted(uninformed.unknown_features) == sorted(features)
    assert informed != [item.item_id for item in uninformed]


def test_strict_filter_returns_fewer_items_without_padding(client, small_dataset):
    catalogue = small_dataset.items.set_index(small_dataset.schema.items.id)
    rare = catalogue["category"].value_counts().index[-1]
    expected = int((catalogue["category"] == rare).sum())
    items = client.recommend(
        user_id=known_user(small_dataset), top_n=100, filters={"category": [rare]}
    )
    assert len(items) == expected < 100
    assert all(item.item_id in catalogue.index for item in items)


def test_rejected_request_is_logged_with_its_request_id(stack, loaded):
    with grpcclient.InferenceServerClient(stack.triton_grpc_url) as raw:
        with pytest.raises(InferenceServerException):
            raw.infer(
                "recommend_ensemble",
                [bytes_input("USER_ID", [b"no-such-user"])],
                request_id="trace-7f3a",
            )
    log = (stack.logs_dir / "triton.log").read_text(encoding="utf-8", errors="replace")
    line = next(line for line in log.splitlines() if "trace-7f3a" in line)
    assert "NOT_FOUND" in line
    assert "no-such-user" in line
