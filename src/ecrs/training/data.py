"""Encoded training data: id rows for every user and item, and positive pairs.

When the encoder has a recent-items field, each user row ends with the
user's latest training items, as served. Each training pair gets its own
history instead: the items the user interacted with before that pair, so
that a model never learns from a history that contains its target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ecrs.data.dataset import Dataset
from ecrs.features.encoder import MISSING_ID, OOV_ID, FeatureEncoder


@dataclass
class EncodedData:
    """Id rows of all users and items, indexed by position, and positive pairs.

    ``pairs`` is an ``int64`` array ``[n, 2]`` of (user position, item
    position), one row per training interaction, ordered by user and time.
    ``pair_history`` ``[n, history_length]`` holds the recent-items ids
    before each pair, most recent first.
    """

    encoder: FeatureEncoder
    user_ids: list[str]
    item_ids: list[str]
    user_rows: np.ndarray
    item_rows: np.ndarray
    pairs: np.ndarray
    pair_history: np.ndarray | None = None

    def as_new_users(
        self, rows: np.ndarray, share: float, rng: np.random.Generator
    ) -> np.ndarray:
        """Turn a random ``share`` of user rows into new users, in place.

        Such a row gets the out-of-vocabulary id and an empty history, as a
        request with a new user's features encodes, so that training teaches
        the models to recommend from features alone.
        """
        chosen = rng.random(len(rows)) < share
        rows[chosen, 0] = OOV_ID
        length = self.encoder.users.history_length
        if length:
            rows[chosen, -length:] = MISSING_ID
        return rows

    def pair_user_rows(self, pair_indices: np.ndarray) -> np.ndarray:
        """User rows of the given pairs, each with the history before it."""
        rows = self.user_rows[self.pairs[pair_indices, 0]]
        length = self.encoder.users.history_length
        if length and self.pair_history is not None:
            rows = rows.copy()
            rows[:, -length:] = self.pair_history[pair_indices]
        return rows

    @property
    def item_counts(self) -> np.ndarray:
        """Training interactions per item position."""
        return np.bincount(self.pairs[:, 1], minlength=len(self.item_ids))

    def user_position(self) -> dict[str, int]:
        return {user_id: i for i, user_id in enumerate(self.user_ids)}

    def item_position(self) -> dict[str, int]:
        return {item_id: i for i, item_id in enumerate(self.item_ids)}


def entity_records(frame: pd.DataFrame, id_column: str) -> tuple[list[str], list[dict]]:
    """Split a users or items table into ids and raw feature mappings."""
    ids = frame[id_column].tolist()
    records = frame.drop(columns=[id_column]).to_dict(orient="records")
    return ids, records


def encode_dataset(
    dataset: Dataset,
    train: pd.DataFrame,
    *,
    encoder: FeatureEncoder | None = None,
    min_count: int = 1,
    history_length: int = 0,
) -> EncodedData:
    """Fit an encoder on the training interactions (unless given) and encode.

    ``history_length`` sizes the recent-items field of a fitted encoder; a
    given encoder keeps its own.
    """
    schema = dataset.schema
    user_ids, user_records = entity_records(dataset.users, schema.users.id)
    item_ids, item_records = entity_records(dataset.items, schema.items.id)
    spec = schema.interactions
    if encoder is None:
        encoder = FeatureEncoder.fit(
            schema,
            users=user_records,
            items=item_records,
            trained_user_ids=train[spec.user_id].unique(),
            trained_item_ids=train[spec.item_id].unique(),
            min_count=min_count,
            history_length=history_length,
        )
    user_index = {user_id: i for i, user_id in enumerate(user_ids)}
    item_index = {item_id: i for i, item_id in enumerate(item_ids)}
    ordered = train.sort_values(
        [spec.user_id, spec.timestamp, spec.item_id], kind="stable"
    )
    pairs = np.stack(
        [
            ordered[spec.user_id].map(user_index).to_numpy(dtype=np.int64),
            ordered[spec.item_id].map(item_index).to_numpy(dtype=np.int64),
        ],
        axis=1,
    )
    data = EncodedData(
        encoder=encoder,
        user_ids=user_ids,
        item_ids=item_ids,
        user_rows=encoder.encode_users(user_ids, user_records),
        item_rows=encoder.encode_items(item_ids, item_records),
        pairs=pairs,
    )
    length = encoder.users.history_length
    if length:
        codes = np.asarray(encoder.users.history_ids(item_ids), dtype=np.int64)
        data.pair_history, latest = histories(pairs, codes, length, len(user_ids))
        data.user_rows[:, -length:] = latest
    return data


def histories(
    pairs: np.ndarray, item_codes: np.ndarray, length: int, num_users: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return each pair's history before it and each user's latest history.

    A history contains the codes of the last ``length`` distinct items, most
    recent first, with 0 in empty slots: an item repeated in time counts once,
    at its latest position, as in the served sorted set. ``pairs`` must be
    ordered by user, then time. The second result has one row per user
    position below ``num_users``.
    """
    count = len(pairs)
    latest = np.zeros((num_users, length), dtype=np.int64)
    if count == 0:
        return np.zeros((0, length), dtype=np.int64), latest
    users = pairs[:, 0]
    starts = np.r_[0, np.flatnonzero(users[1:] != users[:-1]) + 1]
    sizes = np.diff(np.r_[starts, count])
    group = np.repeat(np.arange(len(starts)), sizes)
    # Each user's pairs, then one extra slot whose history is the latest.
    pair_slot = np.arange(count) + group
    latest_slot = starts + sizes + np.arange(len(starts))
    codes = np.zeros(count + len(starts), dtype=np.int64)
    codes[pair_slot] = item_codes[pairs[:, 1]]
    first = np.zeros(len(codes), dtype=np.int64)
    first[pair_slot] = (starts + np.arange(len(starts)))[group]
    first[latest_slot] = starts + np.arange(len(starts))
    before = _distinct_before(codes, first, length)
    latest[users[starts]] = before[latest_slot]
    return before[pair_slot], latest


def _distinct_before(codes: np.ndarray, first: np.ndarray, length: int) -> np.ndarray:
    """For each slot, the distinct codes before it back to ``first``, newest first."""
    before = np.zeros((len(codes), length), dtype=np.int64)
    filled = np.zeros(len(codes), dtype=np.int64)
    active = np.arange(len(codes))
    lag = 1
    while active.size:
        source = active - lag
        reachable = source >= first[active]
        active, source = active[reachable], source[reachable]
        candidate = codes[source]
        repeated = (before[active] == candidate[:, None]).any(axis=1)
        added = active[~repeated]
        before[added, filled[added]] = candidate[~repeated]
        filled[added] += 1
        active = active[filled[active] < length]
        lag += 1
    return before
