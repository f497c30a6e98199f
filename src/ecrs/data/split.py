"""Split interactions in time: each user's latest interactions are held out."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ecrs.data.dataset import Dataset
from ecrs.errors import ConfigError


def temporal_split(
    dataset: Dataset, *, holdout_share: float = 0.2
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the interactions into (train, heldout) frames, per user in time.

    Each user's interactions are ordered by timestamp, ties by item id in
    string order, and the last ``max(1, round(holdout_share * n))`` of their
    ``n`` interactions are held out. Rounding is half to even, as in Python's
    ``round``, so a user with one interaction has it held out and none in
    train. Both frames keep the columns and the relative row order of
    ``dataset.interactions``, with a fresh index.
    """
    if not 0.0 <= holdout_share <= 1.0:
        raise ConfigError(
            f"holdout_share is {holdout_share!r}; set it to a share from 0 to 1, "
            "such as 0.2 to hold out each user's last 20% of interactions"
        )
    interactions = dataset.interactions.reset_index(drop=True)
    spec = dataset.schema.interactions

    ordered = interactions.sort_values(
        [spec.user_id, spec.timestamp, spec.item_id], kind="stable"
    )
    users = ordered.groupby(spec.user_id, sort=False, dropna=False)[spec.user_id]
    position = users.cumcount().to_numpy()
    count = users.transform("size").to_numpy()
    held_count = np.maximum(1, np.round(holdout_share * count))

    heldout = np.zeros(len(interactions), dtype=bool)
    heldout[ordered.index.to_numpy()] = position >= count - held_count
    train = interactions[~heldout].reset_index(drop=True)
    return train, interactions[heldout].reset_index(drop=True)
