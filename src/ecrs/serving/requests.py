"""Parse and check the inputs of the served models' requests.

The functions take plain numpy arrays (``None`` for an absent optional
input), so they run and test without Triton. Ids are at most
``MAX_ID_BYTES`` bytes of UTF-8, and an id list has at most
``MAX_ITEM_IDS`` ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ecrs.data.schema import EntityTable
from ecrs.errors import InvalidInputError
from ecrs.serving.filters import CAP_INPUT, FILTER_INPUT, ItemFilter, parse_item_filter
from ecrs.serving.recommender import (
    EXCLUDE_SEEN_INPUT,
    TOP_N_INPUT,
    USER_FEATURES_INPUT,
    USER_ID_INPUT,
    parse_user_features,
)
from ecrs.serving.versions import MODEL_VERSION_INPUT


# Every input of recommend_ensemble; all are optional in its config.
INPUT_NAMES = (
    USER_ID_INPUT,
    USER_FEATURES_INPUT,
    TOP_N_INPUT,
    EXCLUDE_SEEN_INPUT,
    FILTER_INPUT,
    CAP_INPUT,
    MODEL_VERSION_INPUT,
)
ITEM_IDS_INPUT = "ITEM_IDS"
CANDIDATES_INPUT = "CANDIDATES"
MAX_ID_BYTES = 256
MAX_ITEM_IDS = 1000


@dataclass(frozen=True)
class RecommendRequest:
    top_n: int
    user_id: str | None = None
    user_features: dict[str, str] | None = None
    exclude_seen: bool = False
    item_filter: ItemFilter = ItemFilter()


def parse_request(
    inputs: Mapping[str, np.ndarray | None],
    *,
    feature_names: list[str],
    default_top_n: int,
    max_top_n: int,
    items: EntityTable | None = None,
    required: Sequence[str] = (),
) -> RecommendRequest:
    """Check that exactly one of USER_ID and USER_FEATURES is present, TOP_N,
    and the optional flags and item filters (``items`` names the item columns).
    ``required`` names the user features a new user must send."""
    user_id, user_features = parse_user(inputs, feature_names, required)
    item_filter = ItemFilter()
    if items is not None:
        item_filter = parse_item_filter(
            _optional_bytes(inputs.get(FILTER_INPUT), FILTER_INPUT),
            _optional_bytes(inputs.get(CAP_INPUT), CAP_INPUT),
            items,
        )
    return RecommendRequest(
        top_n=parse_top_n(inputs.get(TOP_N_INPUT), default_top_n, max_top_n),
        user_id=user_id,
        user_features=user_features,
        exclude_seen=parse_flag(inputs.get(EXCLUDE_SEEN_INPUT), EXCLUDE_SEEN_INPUT),
        item_filter=item_filter,
    )


def _optional_bytes(value: np.ndarray | None, name: str) -> bytes | None:
    return None if value is None else single_bytes(value, name)


def parse_user(
    inputs: Mapping[str, np.ndarray | None],
    feature_names: list[str],
    required: Sequence[str] = (),
) -> tuple[str | None, dict[str, str] | None]:
    """Return (user id, None) for a known user or (None, features) for a new one."""
    user_id = inputs.get(USER_ID_INPUT)
    user_features = inputs.get(USER_FEATURES_INPUT)
    if (user_id is None) == (user_features is None):
        raise InvalidInputError(
            f"send exactly one of {USER_ID_INPUT} (a known user) and "
            f"{USER_FEATURES_INPUT} (a new user's features as a JSON object)",
            input_name=USER_ID_INPUT if user_id is not None else USER_FEATURES_INPUT,
        )
    if user_id is not None:
        return single_text(user_id, USER_ID_INPUT), None
    raw = single_bytes(user_features, USER_FEATURES_INPUT)
    return None, parse_user_features(raw, feature_names, required)


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
    return parse_count(value, TOP_N_INPUT, default, maximum)


def parse_count(value: np.ndarray | None, name: str, default: int, maximum: int) -> int:
    """Read an optional one-element count from 1 to ``maximum``."""
    if value is None:
        return default
    if value.size != 1:
        raise InvalidInputError(
            f"{name} must hold one value, got {value.size}", input_name=name
        )
    count = int(value.reshape(-1)[0])
    if not 1 <= count <= maximum:
        raise InvalidInputError(
            f"{name} is {count}; send a value from 1 to {maximum}", input_name=name
        )
    return count


def single_bytes(value: np.ndarray, name: str) -> bytes:
    if value.size != 1:
        raise InvalidInputError(
            f"{name} must hold one element (one user per request), got {value.size}",
            input_name=name,
        )
    element = value.reshape(-1)[0]
    return element if isinstance(element, bytes) else str(element).encode("utf-8")


def single_text(value: np.ndarray, name: str) -> str:
    """Read a one-element id input as checked UTF-8 text."""
    return _id_text(single_bytes(value, name), name)


def parse_item_ids(value: np.ndarray | None, name: str = ITEM_IDS_INPUT) -> list[str]:
    """Read a list of 1 to ``MAX_ITEM_IDS`` distinct ids, keeping their order."""
    if value is None or value.size == 0:
        raise InvalidInputError(
            f"{name} is missing or empty; send 1 to {MAX_ITEM_IDS} item ids",
            input_name=name,
        )
    if value.size > MAX_ITEM_IDS:
        raise InvalidInputError(
            f"{name} has {value.size} ids; send at most {MAX_ITEM_IDS} per request",
            input_name=name,
        )
    ids = [_id_text(element, name) for element in value.reshape(-1)]
    return list(dict.fromkeys(ids))


def check_id(text: str, name: str) -> str:
    """Reject an empty id or one over ``MAX_ID_BYTES`` bytes."""
    if not text:
        raise InvalidInputError(f"{name} is an empty id; send a non-empty id", input_name=name)
    size = len(text.encode("utf-8"))
    if size > MAX_ID_BYTES:
        raise InvalidInputError(
            f"{name} {text[:40]!r}... is {size} bytes long; ids are at most "
            f"{MAX_ID_BYTES} bytes",
            input_name=name,
        )
    return text


def _id_text(element: object, name: str) -> str:
    raw = element if isinstance(element, bytes) else str(element).encode("utf-8")
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"{name} {raw[:40]!r} is not valid UTF-8; send ids as UTF-8 text",
            input_name=name,
        ) from exc
    return check_id(text, name)
