"""Online changes through the ecrs CLI, seen by the running server at once.

Every test works on users and items it creates itself, so the other tests of
the shared stack keep their data.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ecrs.errors import NotFoundError
from ecrs.stores.feature_store import INTERACTIONS, USER, FeatureStore

pytestmark = pytest.mark.integration

ECRS = str(Path(sys.executable).parent / "ecrs")
# More than the test catalogue holds, so recall returns every item.
ALL_CANDIDATES = 1000


def ecrs(stack, *args):
    result = subprocess.run(
        [ECRS, "--state-dir", str(stack.state_dir), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result


def write_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def item_row(dataset, item_id):
    """A copy of the first item's raw columns under a new id."""
    row = dataset.items.iloc[0].to_dict()
    row[dataset.schema.items.id] = item_id
    return row


def recalled(client, user_id):
    return {item_id for item_id, _ in client.recall(user_id=user_id, candidates=ALL_CANDIDATES)}


def test_item_upsert_then_remove(
    stack, loaded, client, small_dataset, tmp_path
):
    user_id = small_dataset.users[small_dataset.schema.users.id].iloc[0]
    items = write_csv(tmp_path / "items.csv", [item_row(small_dataset, "fresh-item")])
    added = ecrs(stack, "items", "upsert", "--file", str(items))
    assert added.returncode == 0, added.stderr
    assert "fresh-item" in client.items(["fresh-item"]).items
    assert "fresh-item" in recalled(client, user_id)
    assert client.rank(["fresh-item"], user_id=user_id).items[0][0] == "fresh-item"
    # The next recommendation among items with its title includes it.
    title = item_row(small_dataset, "fresh-item")["title"]
    served = client.recommend(user_id=user_id, top_n=5, filters={"title": [title]})
    assert "fresh-item" in {item.item_id for item in served}

    removed = ecrs(stack, "items", "remove", "fresh-item", "never-stored")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.startswith("removed 1 items")
    assert "not stored, so nothing to remove: never-stored" in removed.stderr
    assert client.items(["fresh-item"]).missing == ["fresh-item"]
    assert "fresh-item" not in recalled(client, user_id)
    for _ in range(3):
        served = client.recommend(user_id=user_id, top_n=100)
        assert "fresh-item" not in {item.item_id for item in served}


def test_recorded_event_excluded_as_seen(
    stack, loaded, client, small_dataset, tmp_path
):
    schema = small_dataset.schema
    user = small_dataset.users.iloc[0].to_dict()
    user[schema.users.id] = "fresh-user"
    users = write_csv(tmp_path / "users.csv", [user])
    assert ecrs(stack, "users", "upsert", "--file", str(users)).returncode == 0
    first = client.recommend(user_id="fresh-user", top_n=5, exclude_seen=True)
    bought = first[0].item_id
    events = write_csv(
        tmp_path / "events.csv",
        [{"user_id": "fresh-user", "item_id": bought, "timestamp": 1_700_000_000}],
    )
    recorded = ecrs(stack, "events", "record", "--file", str(events))
    assert recorded.returncode == 0, recorded.stderr
    assert client.user("fresh-user").recent_items == [bought]
    after = client.recommend(user_id="fresh-user", top_n=5, exclude_seen=True)
    assert bought not in {item.item_id for item in after}
    assert len(after) == 5


def test_deleted_user_is_not_found_and_leaves_nothing(
    stack, loaded, client, small_dataset, tmp_path
):
    schema = small_dataset.schema
    user = small_dataset.users.iloc[1].to_dict()
    user[schema.users.id] = "leaving-user"
    write_csv(tmp_path / "users.csv", [user])
    write_csv(
        tmp_path / "events.csv",
        [{"user_id": "leaving-user", "item_id": small_dataset.items.iloc[0, 0],
          "timestamp": 1_700_000_000}],
    )  # fmt: skip
    assert ecrs(stack, "users", "upsert", "--file", str(tmp_path / "users.csv")).returncode == 0
    assert ecrs(stack, "events", "record", "--file", str(tmp_path / "events.csv")).returncode == 0
    assert client.user("leaving-user").recent_items

    deleted = ecrs(stack, "users", "delete", "leaving-user")
    assert deleted.returncode == 0, deleted.stderr
    with pytest.raises(NotFoundError):
        client.recommend(user_id="leaving-user")
    features = FeatureStore(stack.stores, schema.name)
    keys = [features.key(USER, "leaving-user"), features.key(INTERACTIONS, "leaving-user")]
    assert features.client.exists(*keys) == 0
    again = ecrs(stack, "users", "delete", "leaving-user")
    assert again.returncode == 1
    assert "'leaving-user' is not in the stores" in again.stderr


def test_update_files_with_bad_columns_are_rejected(stack, loaded, tmp_path):
    bad_items = write_csv(tmp_path / "items.csv", [{"item_id": "x", "colour": "red"}])
    result = ecrs(stack, "items", "upsert", "--file", str(bad_items))
    assert result.returncode == 1
    assert "['colour']" in result.stderr
    bad_events = write_csv(
        tmp_path / "events.csv", [{"user_id": "u", "item_id": "i", "timestamp": "soon"}]
    )
    result = ecrs(stack, "events", "record", "--file", str(bad_events))
    assert result.returncode == 1
    assert "not integer seconds on lines [2]" in result.stderr


def test_events_of_unknown_users_or_items_are_rejected(
    stack, loaded, small_dataset, tmp_path
):
    known_user = str(small_dataset.users.iloc[2][small_dataset.schema.users.id])
    known_item = str(small_dataset.items.iloc[2][small_dataset.schema.items.id])
    features = FeatureStore(stack.stores, small_dataset.schema.name)
    history_key = features.key(INTERACTIONS, known_user)
    history = features.client.zrange(history_key, 0, -1, withscores=True)
    cases = {
        "user": [("ghost-user", known_item), (known_user, known_item)],
        "item": [(known_user, known_item), (known_user, "ghost-item")],
    }
    for kind, rows in cases.items():
        events = write_csv(
            tmp_path / f"{kind}-events.csv",
            [{"user_id": u, "item_id": i, "timestamp": 1_700_000_000} for u, i in rows],
        )
        result = ecrs(stack, "events", "record", "--file", str(events))
        assert result.returncode == 1
        assert f"1 {kind} ids of the events are not stored: ghost-{kind}" in result.stderr
        assert "no event was recorded" in result.stderr
    # Neither file wrote anything: not the known pairs, not an orphan history.
    assert features.client.zrange(history_key, 0, -1, withscores=True) == history
    assert features.client.exists(features.key(INTERACTIONS, "ghost-user")) == 0
