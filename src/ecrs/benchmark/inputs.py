"""The benchmark's requests: known users by id and new users by their features.

The same list feeds perf_analyzer (its ``--input-data`` JSON file, each
entry one request) and the reference pipeline (the numpy arrays that Triton
hands a Python model).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ecrs.data.dataset import Dataset
from ecrs.serving.recommender import TOP_N_INPUT, USER_FEATURES_INPUT, USER_ID_INPUT

Request = dict[str, Any]


def build_requests(
    dataset: Dataset,
    *,
    count: int,
    new_user_share: float,
    top_n: int,
    seed: int = 0,
) -> list[Request]:
    """Draw ``count`` requests: a share of new users, the rest known users.

    Known users are drawn from the users with interactions. A new user is a
    random user's raw features sent as ``USER_FEATURES``, without an id, so
    the models see a profile they never trained on as that user. New users
    are spread evenly through the list, so every stretch of it has the share.
    """
    if not 0.0 <= new_user_share <= 1.0:
        raise ValueError(f"new_user_share is {new_user_share}; pass 0 to 1")
    random = np.random.default_rng(seed)
    schema = dataset.schema
    active = sorted(
        set(dataset.interactions[schema.interactions.user_id].astype(str))
    )
    features = schema.users.feature_names
    requests: list[Request] = []
    for index in range(count):
        is_new = int((index + 1) * new_user_share) > int(index * new_user_share)
        if is_new:
            row = dataset.users.iloc[int(random.integers(len(dataset.users)))]
            profile = {name: row[name] for name in features if row[name] is not None}
            requests.append({USER_FEATURES_INPUT: json.dumps(profile)})
        else:
            requests.append({USER_ID_INPUT: active[int(random.integers(len(active)))]})
        requests[-1][TOP_N_INPUT] = top_n
    return requests


def write_input_data(requests: Sequence[Request], path: Path) -> Path:
    """Write perf_analyzer's ``--input-data`` JSON file: one entry per request."""
    entries = [{name: [value] for name, value in request.items()} for request in requests]
    path.write_text(json.dumps({"data": entries}), encoding="utf-8")
    return path


def as_arrays(request: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Return a request as the arrays a Triton Python model receives."""
    arrays = {}
    for name, value in request.items():
        if isinstance(value, str):
            arrays[name] = np.array([value.encode("utf-8")], dtype=np.object_)
        else:
            arrays[name] = np.array([value], dtype=np.int32)
    return arrays
