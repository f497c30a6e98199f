"""Cold-start split: users left out of training entirely, served as new users.

A fixed share of the users, drawn with a seed, lose all their interactions
from the training part. The models never see their ids or histories, so
their encoded rows hold the out-of-vocabulary id, their raw features and an
empty history: exactly a new user's request. All of their interactions are
the items to find.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ecrs.data.dataset import Dataset
from ecrs.errors import ConfigError


@dataclass(frozen=True)
class ColdStartSplit:
    """Training rows without the cold users, and the cold users' interactions."""

    train: pd.DataFrame
    heldout: pd.DataFrame
    users: list[str]


def cold_start_split(
    dataset: Dataset, train: pd.DataFrame, *, share: float = 0.1, seed: int = 0
) -> ColdStartSplit:
    """Draw ``share`` of the users with interactions as cold users.

    ``train`` is the training part of the main split; the cold users' rows
    leave it, and every interaction of theirs in ``dataset`` is held out.
    """
    if not 0.0 < share < 1.0:
        raise ConfigError(
            f"the cold-start share is {share!r}; set it between 0 and 1, "
            "such as 0.1 for a tenth of the users"
        )
    spec = dataset.schema.interactions
    interactions = dataset.interactions
    candidates = sorted(interactions[spec.user_id].astype(str).unique())
    count = max(1, round(share * len(candidates)))
    rng = np.random.default_rng(seed)
    cold = sorted(rng.choice(candidates, size=count, replace=False).tolist())
    is_cold = interactions[spec.user_id].isin(cold)
    return ColdStartSplit(
        train=train[~train[spec.user_id].isin(cold)].reset_index(drop=True),
        heldout=interactions[is_cold].reset_index(drop=True),
        users=cold,
    )
