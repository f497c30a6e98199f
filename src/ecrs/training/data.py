"""Encoded training data: id rows for every user and item, and positive pairs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ecrs.data.dataset import Dataset
from ecrs.features.encoder import FeatureEncoder


@dataclass
class EncodedData:
    """Id rows of all users and items, indexed by position, and positive pairs.

    ``pairs`` is an ``int64`` array ``[n, 2]`` of (user position, item
    position), one row per training interaction.
    """

    encoder: FeatureEncoder
    user_ids: list[str]
    item_ids: list[str]
    user_rows: np.ndarray
    item_rows: np.ndarray
    pairs: np.ndarray

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
) -> EncodedData:
    """Fit an encoder on the training interactions (unless given) and encode."""
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
        )
    user_index = {user_id: i for i, user_id in enumerate(user_ids)}
    item_index = {item_id: i for i, item_id in enumerate(item_ids)}
    pairs = np.stack(
        [
            train[spec.user_id].map(user_index).to_numpy(dtype=np.int64),
            train[spec.item_id].map(item_index).to_numpy(dtype=np.int64),
        ],
        axis=1,
    )
    return EncodedData(
        encoder=encoder,
        user_ids=user_ids,
        item_ids=item_ids,
        user_rows=encoder.encode_users(user_ids, user_records),
        item_rows=encoder.encode_items(item_ids, item_records),
        pairs=pairs,
    )
