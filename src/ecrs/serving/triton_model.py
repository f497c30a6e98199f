"""The served Python models without their Triton adapter.

``RecommendModel`` picks the exported version it serves, loads that
version's encoder and wires the stores to a ``Recommender``. Each served
Python model (``CAPABILITIES``) is one of its request handlers: a handler
takes the request's input arrays by name and returns the output arrays by
name. ``ecrs.serving.triton_adapter`` supplies the BLS calls and turns the
arrays into Triton tensors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecrs.config import StoreConfig
from ecrs.errors import ConfigError, InvalidInputError
from ecrs.features.encoder import FeatureEncoder
from ecrs.serving.health import Probe
from ecrs.serving.layout import (
    ITEM_LOOKUP,
    RANK_ITEMS,
    RECALL_CANDIDATES,
    RECOMMEND,
    USER_LOOKUP,
    USER_TOWER,
    latest_version,
)
from ecrs.serving.recommender import (
    EXCLUDE_SEEN_INPUT,
    USER_ID_INPUT,
    RankFn,
    Recommendation,
    Recommender,
    TowerFn,
    User,
)
from ecrs.serving.requests import (
    CANDIDATES_INPUT,
    INPUT_NAMES,
    ITEM_IDS_INPUT,
    parse_count,
    parse_flag,
    parse_item_ids,
    parse_request,
    parse_user,
    single_text,
)
from ecrs.serving.scoring import Scoring
from ecrs.stores.feature_store import FeatureStore
from ecrs.stores.vector_store import VectorStore


Inputs = Mapping[str, "np.ndarray | None"]
Outputs = dict[str, np.ndarray]


REDIS = "redis"
MILVUS = "milvus"


@dataclass(frozen=True)
class Capability:
    """A served Python model: its inputs and outputs, its handler's name, and
    the stores it cannot serve without."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    handler: str
    stores: tuple[str, ...] = (REDIS,)


USER_INPUTS = ("USER_ID", "USER_FEATURES")
CAPABILITIES = {
    RECOMMEND: Capability(
        INPUT_NAMES,
        ("ITEM_IDS", "SCORES", "ITEM_DETAILS", "UNKNOWN_FEATURES"),
        "recommend_outputs",
        (REDIS, MILVUS),
    ),
    USER_LOOKUP: Capability(("USER_ID",), ("USER_FEATURES", "RECENT_ITEMS"), "lookup_user"),
    ITEM_LOOKUP: Capability(
        ("ITEM_IDS",), ("ITEM_IDS", "ITEM_DETAILS", "MISSING_IDS"), "lookup_items"
    ),
    RECALL_CANDIDATES: Capability(
        (*USER_INPUTS, "CANDIDATES", "EXCLUDE_SEEN"),
        ("ITEM_IDS", "SIMILARITIES"),
        "recall",
        (REDIS, MILVUS),
    ),
    RANK_ITEMS: Capability(
        (*USER_INPUTS, "ITEM_IDS"), ("ITEM_IDS", "SCORES", "MISSING_IDS"), "rank"
    ),
}


@dataclass(frozen=True, kw_only=True)
class ModelParameters:
    """The ``parameters`` of recommend_ensemble's config.pbtxt."""

    default_top_n: int = 10
    max_top_n: int = 100
    candidates: int = 200
    max_candidates: int = 1000


def model_parameters(config: Mapping[str, Any]) -> ModelParameters:
    """Read integer parameters from a parsed model config, checking each."""
    raw = config.get("parameters", {})
    values = {}
    for name in ("default_top_n", "max_top_n", "candidates", "max_candidates"):
        if name not in raw:
            continue
        text = raw[name].get("string_value", "")
        if not text.isdigit() or int(text) < 1:
            raise ConfigError(
                f"model {config.get('name')}: parameter {name} is {text!r}; "
                "set it to a positive integer in config.pbtxt"
            )
        values[name] = int(text)
    parameters = ModelParameters(**values)
    if parameters.default_top_n > parameters.max_top_n:
        raise ConfigError(
            f"model {config.get('name')}: default_top_n {parameters.default_top_n} "
            f"exceeds max_top_n {parameters.max_top_n}; lower it in config.pbtxt"
        )
    if parameters.max_top_n > parameters.candidates:
        raise ConfigError(
            f"model {config.get('name')}: max_top_n {parameters.max_top_n} exceeds "
            f"candidates {parameters.candidates}; recall cannot fill that many results"
        )
    return parameters


class RecommendModel:
    """Serve recommendations from the newest version exported into the repository."""

    def __init__(
        self,
        *,
        model_folder: str | Path,
        parameters: ModelParameters,
        stores: StoreConfig,
        user_tower: TowerFn,
        ranker: RankFn,
        item_tower: TowerFn | None = None,
    ) -> None:
        repository = Path(model_folder).parent
        self.parameters = parameters
        self.version = latest_version(repository)
        version_folder = repository / USER_TOWER / str(self.version)
        self.encoder = FeatureEncoder.load(version_folder)
        self.features = FeatureStore(stores, self.encoder.schema.name)
        self.vectors = VectorStore(stores)
        self.collection = self.vectors.collection(self.version)
        self.recommender = Recommender(
            encoder=self.encoder,
            features=self.features,
            vectors=self.vectors,
            collection=self.collection,
            user_tower=user_tower,
            ranker=ranker,
            candidates=parameters.candidates,
            scoring=Scoring.load(version_folder),
            item_tower=item_tower,
        )

    def recommend(self, inputs: Mapping[str, np.ndarray | None]) -> Recommendation:
        request = parse_request(
            inputs,
            feature_names=self.encoder.users.feature_names,
            default_top_n=self.parameters.default_top_n,
            max_top_n=self.parameters.max_top_n,
            items=self.encoder.schema.items,
        )
        return self.recommender.recommend(
            top_n=request.top_n,
            user_id=request.user_id,
            user_features=request.user_features,
            exclude_seen=request.exclude_seen,
            item_filter=request.item_filter,
        )

    def recommend_outputs(self, inputs: Inputs) -> Outputs:
        result = self.recommend(inputs)
        return {
            "ITEM_IDS": _texts(result.item_ids),
            "SCORES": result.scores.astype(np.float32),
            "ITEM_DETAILS": np.array(result.details, dtype=np.object_),
            "UNKNOWN_FEATURES": _texts(result.unknown_features),
        }

    def lookup_user(self, inputs: Inputs) -> Outputs:
        user_id = single_text(_required(inputs, USER_ID_INPUT), USER_ID_INPUT)
        features, recent = self.recommender.lookup_user(user_id)
        return {
            "USER_FEATURES": _texts([json.dumps(features, ensure_ascii=False)]),
            "RECENT_ITEMS": _texts(recent),
        }

    def lookup_items(self, inputs: Inputs) -> Outputs:
        found = self.recommender.lookup_items(parse_item_ids(inputs.get(ITEM_IDS_INPUT)))
        return {
            "ITEM_IDS": _texts(found.item_ids),
            "ITEM_DETAILS": np.array(found.details, dtype=np.object_),
            "MISSING_IDS": _texts(found.missing),
        }

    def recall(self, inputs: Inputs) -> Outputs:
        user = self._user(inputs)
        count = parse_count(
            inputs.get(CANDIDATES_INPUT),
            CANDIDATES_INPUT,
            self.parameters.candidates,
            self.parameters.max_candidates,
        )
        candidates = self.recommender.recall(user.row, count, exclude=user.seen)
        return {
            "ITEM_IDS": _texts(candidates.item_ids),
            "SIMILARITIES": np.asarray(candidates.similarities, dtype=np.float32),
        }

    def rank(self, inputs: Inputs) -> Outputs:
        item_ids = parse_item_ids(inputs.get(ITEM_IDS_INPUT))
        ranked, missing = self.recommender.rank_items(self._user(inputs), item_ids)
        return {
            "ITEM_IDS": _texts(ranked.item_ids),
            "SCORES": ranked.scores.astype(np.float32),
            "MISSING_IDS": _texts(missing),
        }

    def _user(self, inputs: Inputs) -> User:
        user_id, features = parse_user(inputs, self.encoder.users.feature_names)
        exclude_seen = parse_flag(inputs.get(EXCLUDE_SEEN_INPUT), EXCLUDE_SEEN_INPUT)
        return self.recommender.user(
            user_id=user_id, user_features=features, exclude_seen=exclude_seen
        )

    def store_probes(self, stores: tuple[str, ...]) -> dict[str, Probe]:
        """Return a reachability probe for each named store."""
        probes: dict[str, Probe] = {
            REDIS: self.features.ping,
            MILVUS: lambda: self.vectors.ping(self.collection),
        }
        return {store: probes[store] for store in stores}

    def close(self) -> None:
        self.vectors.close()
        self.features.client.close()


def _texts(values: list[str]) -> np.ndarray:
    return np.array([value.encode("utf-8") for value in values], dtype=np.object_)


def _required(inputs: Inputs, name: str) -> np.ndarray:
    value = inputs.get(name)
    if value is None:
        raise InvalidInputError(f"{name} is missing; send it", input_name=name)
    return value
