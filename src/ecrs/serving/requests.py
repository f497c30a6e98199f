"""Parse and check the inputs of a ``recommend_ensemble`` request.

The functions take plain numpy arrays (``None`` for an absent optional
input), so they run and test without Triton.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ecrs.errors import InvalidInputError
from ecrs.serving.recommender import (
    EXCLUDE_SEEN_INPUT,
    TOP_N_INPUT,
    USER_FEATURES_INPUT,
    USER_ID_INPUT,
    parse_user_features,
)


# Every input of recommend_ensemble; all are optional in its config.
INPUT_NAMES = (USER_ID_INPUT, USER_FEATURES_INPUT, TOP_N_INPUT, EXCLUDE_SEEN_INPUT)


@dataclass(frozen=True)
class RecommendRequest:
    top_n: int
    user_id: str | None = None
    user_features: dict[str, str] | None = None
    exclude_seen: bool = False


def parse_request(
    inputs: Mapping[str, np.ndarray | None],
    *,
    feature_names: list[str],
    default_top_n: int,
    max_top_n: int,
) -> RecommendRequest:
    """Check that exactly one of USER_ID and USER_FEATURES is present, and TOP_N."""
    user_id = inputs.get(USER_ID_INPUT)
    user_features = inputs.get(USER_FEATURES_INPUT)
    if (user_id is None) == (user_features is None):
        raise InvalidInputError(
            f"send exactly one of {USER_ID_INPUT} (a known user) and "
            f"{USER_FEATURES_INPUT} (a new user's features as a JSON object)",
            input_name=USER_ID_INPUT if user_id is not None else USER_FEATURES_INPUT,
        )
    top_n = parse_top_n(inputs.get(TOP_N_INPUT), default_top_n, max_top_n)
    exclude_seen = parse_flag(inputs.get(EXCLUDE_SEEN_INPUT), EXCLUDE_SEEN_INPUT)
    if user_id is not None:
        return RecommendRequest(
            top_n=top_n,
            user_id=single_text(user_id, USER_ID_INPUT),
            exclude_seen=exclude_seen,
        )
    raw = single_bytes(user_features, USER_FEATURES_INPUT)
    return RecommendRequest(
        top_n=top_n,
        user_features=parse_user_features(raw, feature_names),
        exclude_seen=exclude_seen,
    )


def parse_flag(value: np.ndarray | None, name: str) -> bool:
    """Read an optional one-element BOOL input; absent means false."""
    if value is None:
        return False
    if value.size != 1:
        raise InvalidInputError(
            f"{name} must hold one value, got {value.size}", input_name=name
        )
    return bool(value.reshape(-1)[0])


def parse_top_n(value: np.ndarray | None, default: int, maximum: int) -> int:
    if value is None:
        return default
    if value.size != 1:
        raise InvalidInputError(
            f"{TOP_N_INPUT} must hold one value, got {value.size}",
            input_name=TOP_N_INPUT,
        )
    top_n = int(value.reshape(-1)[0])
    if not 1 <= top_n <= maximum:
        raise InvalidInputError(
            f"{TOP_N_INPUT} is {top_n}; send a value from 1 to {maximum}",
            input_name=TOP_N_INPUT,
        )
    return top_n


def single_bytes(value: np.ndarray, name: str) -> bytes:
    if value.size != 1:
        raise InvalidInputError(
            f"{name} must hold one element (one user per request), got {value.size}",
            input_name=name,
        )
    element = value.reshape(-1)[0]
    return element if isinstance(element, bytes) else str(element).encode("utf-8")


def single_text(value: np.ndarray, name: str) -> str:
    raw = single_bytes(value, name)
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"{name} {raw[:40]!r} is not valid UTF-8; send the id as UTF-8 text",
            input_name=name,
        ) from exc
    if not text:
        raise InvalidInputError(f"{name} is empty; send a user id", input_name=name)
    return text
