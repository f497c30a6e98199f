"""The served Python models without their Triton adapter.

``RecommendModel`` reads the serving pointer for each request, loads the
picked version's encoder on first use and wires the stores to a
``Recommender`` per version. Each served Python model (``CAPABILITIES``) is
one of its request handlers: a handler takes the request's input arrays by
name and returns the output arrays by name. ``ecrs.serving.triton_adapter``
supplies the BLS calls and turns the arrays into Triton tensors.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecrs.config import StoreConfig
from ecrs.errors import ConfigError, InvalidInputError, UnavailableError
from ecrs.features.encoder import FeatureEncoder
from ecrs.serving.health import Probe
from ecrs.serving.item_cache import ItemCache
from ecrs.serving.layout import (
    ITEM_LOOKUP,
    ONNX_FILE,
    RANK_ITEMS,
    RECALL_CANDIDATES,
    RECOMMEND,
    USER_LOOKUP,
    USER_TOWER,
    latest_version,
)
from ecrs.serving.recommender import (
    EXCLUDE_SEEN_INPUT,
    USER_FEATURES_INPUT,
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
from ecrs.serving.stages import StageTimer
from ecrs.serving.versions import (
    COLLECTION_OUTPUT,
    MODEL_VERSION_INPUT,
    MODEL_VERSION_OUTPUT,
    PointerStore,
    ServingPointer,
    routing_key,
)
from ecrs.stores.feature_store import FeatureStore
from ecrs.stores.vector_store import VectorStore


Inputs = Mapping[str, "np.ndarray | None"]
Outputs = dict[str, np.ndarray]
Handler = Callable[["RecommendModel", Inputs], Outputs]


def timed(handler: Handler) -> Handler:
    """Time a request handler's stages with the model's ``StageTimer``."""

    @functools.wraps(handler)
    def run(model: RecommendModel, inputs: Inputs) -> Outputs:
        with model.timer.request():
            return handler(model, inputs)

    return run


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
PROVENANCE = (MODEL_VERSION_OUTPUT, COLLECTION_OUTPUT)
CAPABILITIES = {
    RECOMMEND: Capability(
        INPUT_NAMES,
        ("ITEM_IDS", "SCORES", "ITEM_DETAILS", "UNKNOWN_FEATURES", *PROVENANCE),
        "recommend_outputs",
        (REDIS, MILVUS),
    ),
    USER_LOOKUP: Capability(
        ("USER_ID",), ("USER_FEATURES", "RECENT_ITEMS"), "lookup_user"
    ),
    ITEM_LOOKUP: Capability(
        ("ITEM_IDS",), ("ITEM_IDS", "ITEM_DETAILS", "MISSING_IDS"), "lookup_items"
    ),
    RECALL_CANDIDATES: Capability(
        (*USER_INPUTS, "CANDIDATES", "EXCLUDE_SEEN", MODEL_VERSION_INPUT),
        ("ITEM_IDS", "SIMILARITIES", *PROVENANCE),
        "recall",
        (REDIS, MILVUS),
    ),
    RANK_ITEMS: Capability(
        (*USER_INPUTS, "ITEM_IDS", MODEL_VERSION_INPUT),
        ("ITEM_IDS", "SCORES", "MISSING_IDS", *PROVENANCE),
        "rank",
    ),
}


@dataclass(frozen=True, kw_only=True)
class ModelParameters:
    """The ``parameters`` of recommend_ensemble's config.pbtxt.

    ``item_cache_items`` is the most items whose details and encoded rows a
    model instance keeps in memory (``ecrs.serving.item_cache``); 0 turns the
    cache off.
    """

    default_top_n: int = 10
    max_top_n: int = 100
    candidates: int = 200
    max_candidates: int = 1000
    item_cache_items: int = 0


# The smallest value of each parameter.
PARAMETER_MINIMUMS = {
    "default_top_n": 1,
    "max_top_n": 1,
    "candidates": 1,
    "max_candidates": 1,
    "item_cache_items": 0,
}


def model_parameters(config: Mapping[str, Any]) -> ModelParameters:
    """Read integer parameters from a parsed model config, checking each."""
    raw = config.get("parameters", {})
    values = {}
    for name, minimum in PARAMETER_MINIMUMS.items():
        if name not in raw:
            continue
        text = raw[name].get("string_value", "")
        if not text.isdigit() or int(text) < minimum:
            raise ConfigError(
                f"model {config.get('name')}: parameter {name} is {text!r}; "
                f"set it to an integer of at least {minimum} in config.pbtxt"
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


@dataclass(frozen=True)
class ServedVersion:
    """One exported version as the request path uses it."""

    version: int
    encoder: FeatureEncoder
    collection: str
    recommender: Recommender
    # The user tower file's modification time when the version was loaded.
    stamp: int = 0


# Build a version's tower or ranker function: BLS calls pinned to it.
TowerFactory = Callable[[int], TowerFn]
RankerFactory = Callable[[int], RankFn]


class RecommendModel:
    """Serve each request with the version the serving pointer picks for it.

    The versions' encoders and request paths load on first use and stay, so
    the pointer can move between versions without a model reload. Before any
    pointer is written, the newest exported version serves.
    """

    def __init__(
        self,
        *,
        model_folder: str | Path,
        parameters: ModelParameters,
        stores: StoreConfig,
        user_tower: TowerFactory,
        ranker: RankerFactory,
        item_tower: TowerFactory | None = None,
    ) -> None:
        self.repository = Path(model_folder).parent
        self.parameters = parameters
        self.stores = stores
        self._user_tower = user_tower
        self._ranker = ranker
        self._item_tower = item_tower
        self.vectors = VectorStore(stores)
        self.pointers = PointerStore(stores)
        # The stage seconds of the last request, read by the Triton adapter
        # for its metrics and by the benchmark's reference pipeline.
        self.timer = StageTimer()
        self._versions: dict[int, ServedVersion] = {}
        self.picked_version: int | None = None
        self._lock = threading.Lock()
        self.default_version = latest_version(self.repository)
        self.last_pointer = ServingPointer(self.default_version)
        # Load the newest version now, so that a broken export fails the load.
        self.served(self.default_version)

    def served(self, version: int) -> ServedVersion:
        """Return ``version``'s request path, loading it on first use.

        ``picked_version`` keeps the version for the adapter's metrics; each
        model instance handles one request at a time.
        """
        self.picked_version = version
        stamp = _stamp(self.repository, version)
        with self._lock:
            cached = self._versions.get(version)
            # A number re-exported after a failed rollout is another model.
            if cached is None or cached.stamp != stamp:
                self._versions[version] = self._load_version(version, stamp)
                if cached is not None:
                    cached.recommender.features.client.close()
            return self._versions[version]

    def _load_version(self, version: int, stamp: int) -> ServedVersion:
        folder = self.repository / USER_TOWER / str(version)
        if not stamp:
            raise UnavailableError(
                f"version {version} is not in the model repository {self.repository}; "
                "roll out or roll back to a version that is ('ecrs versions' "
                "lists them)",
                service="triton",
            )
        encoder = FeatureEncoder.load(folder)
        collection = self.vectors.collection(version)
        recommender = Recommender(
            encoder=encoder,
            features=FeatureStore(self.stores, encoder.schema.name),
            vectors=self.vectors,
            collection=collection,
            user_tower=self._user_tower(version),
            ranker=self._ranker(version),
            candidates=self.parameters.candidates,
            scoring=Scoring.load(folder),
            item_tower=None if self._item_tower is None else self._item_tower(version),
            timer=self.timer,
            item_cache=(
                ItemCache(self.parameters.item_cache_items)
                if self.parameters.item_cache_items
                else None
            ),
        )
        return ServedVersion(version, encoder, collection, recommender, stamp)

    def pointer(self) -> ServingPointer:
        """Read the serving pointer; the newest version serves until one is written."""
        pointer = self.pointers.read() or ServingPointer(self.default_version)
        self.last_pointer = pointer
        return pointer

    def pick(self, inputs: Inputs) -> ServedVersion:
        """Return the version for one request: MODEL_VERSION if sent, else the
        pointer's choice for the request's user."""
        requested = inputs.get(MODEL_VERSION_INPUT)
        if requested is not None:
            version = parse_count(requested, MODEL_VERSION_INPUT, 1, 2**31 - 1)
            if not _stamp(self.repository, version):
                raise InvalidInputError(
                    f"{MODEL_VERSION_INPUT} {version} is not in the model repository; "
                    "send a version that 'ecrs versions' lists, or leave it out",
                    input_name=MODEL_VERSION_INPUT,
                )
            return self.served(version)
        return self.served(self.pointer().route(request_routing_key(inputs)))

    def recommend(self, inputs: Mapping[str, np.ndarray | None]) -> Recommendation:
        return self._recommend(inputs)[0]

    def _recommend(self, inputs: Inputs) -> tuple[Recommendation, ServedVersion]:
        served = self.pick(inputs)
        request = parse_request(
            inputs,
            feature_names=served.encoder.users.feature_names,
            default_top_n=self.parameters.default_top_n,
            max_top_n=self.parameters.max_top_n,
            items=served.encoder.schema.items,
            required=served.encoder.schema.users.required_features,
        )
        result = served.recommender.recommend(
            top_n=request.top_n,
            user_id=request.user_id,
            user_features=request.user_features,
            exclude_seen=request.exclude_seen,
            item_filter=request.item_filter,
        )
        return result, served

    @timed
    def recommend_outputs(self, inputs: Inputs) -> Outputs:
        result, served = self._recommend(inputs)
        return {
            "ITEM_IDS": _texts(result.item_ids),
            "SCORES": result.scores.astype(np.float32),
            "ITEM_DETAILS": np.array(result.details, dtype=np.object_),
            "UNKNOWN_FEATURES": _texts(result.unknown_features),
            **_provenance(served),
        }

    @timed
    def lookup_user(self, inputs: Inputs) -> Outputs:
        user_id = single_text(_required(inputs, USER_ID_INPUT), USER_ID_INPUT)
        served = self.pick(inputs)
        features, recent = served.recommender.lookup_user(user_id)
        return {
            "USER_FEATURES": _texts([json.dumps(features, ensure_ascii=False)]),
            "RECENT_ITEMS": _texts(recent),
        }

    @timed
    def lookup_items(self, inputs: Inputs) -> Outputs:
        item_ids = parse_item_ids(inputs.get(ITEM_IDS_INPUT))
        found = self.served(self.pointer().version).recommender.lookup_items(item_ids)
        return {
            "ITEM_IDS": _texts(found.item_ids),
            "ITEM_DETAILS": np.array(found.details, dtype=np.object_),
            "MISSING_IDS": _texts(found.missing),
        }

    @timed
    def recall(self, inputs: Inputs) -> Outputs:
        served = self.pick(inputs)
        user = self._user(served, inputs)
        count = parse_count(
            inputs.get(CANDIDATES_INPUT),
            CANDIDATES_INPUT,
            self.parameters.candidates,
            self.parameters.max_candidates,
        )
        candidates = served.recommender.recall(user.row, count, exclude=user.seen)
        return {
            "ITEM_IDS": _texts(candidates.item_ids),
            "SIMILARITIES": np.asarray(candidates.similarities, dtype=np.float32),
            **_provenance(served),
        }

    @timed
    def rank(self, inputs: Inputs) -> Outputs:
        item_ids = parse_item_ids(inputs.get(ITEM_IDS_INPUT))
        served = self.pick(inputs)
        user = self._user(served, inputs)
        ranked, missing = served.recommender.rank_items(user, item_ids)
        return {
            "ITEM_IDS": _texts(ranked.item_ids),
            "SCORES": ranked.scores.astype(np.float32),
            "MISSING_IDS": _texts(missing),
            **_provenance(served),
        }

    def _user(self, served: ServedVersion, inputs: Inputs) -> User:
        user_id, features = parse_user(
            inputs,
            served.encoder.users.feature_names,
            served.encoder.schema.users.required_features,
        )
        exclude_seen = parse_flag(inputs.get(EXCLUDE_SEEN_INPUT), EXCLUDE_SEEN_INPUT)
        return served.recommender.user(
            user_id=user_id, user_features=features, exclude_seen=exclude_seen
        )

    def store_probes(self, stores: tuple[str, ...]) -> dict[str, Probe]:
        """Return a reachability probe for each named store.

        The Milvus probe looks up the collection of the serving version as
        last read, so that it does not fail because Redis is down.
        """
        probes: dict[str, Probe] = {
            REDIS: self.pointers.ping,
            MILVUS: lambda: self.vectors.ping(
                self.vectors.collection(self.last_pointer.version)
            ),
        }
        return {store: probes[store] for store in stores}

    def close(self) -> None:
        self.vectors.close()
        self.pointers.close()
        for served in self._versions.values():
            served.recommender.features.client.close()


def _stamp(repository: Path, version: int) -> int:
    """Return the modification time of ``version``'s user tower, 0 if absent."""
    try:
        return (repository / USER_TOWER / str(version) / ONNX_FILE).stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def request_routing_key(inputs: Inputs) -> str:
    """Return the canary routing key of a request from its raw user inputs.

    Unreadable inputs still give a key; parsing them later reports the error.
    """
    user_id = inputs.get(USER_ID_INPUT)
    if user_id is not None and user_id.size == 1:
        return routing_key(_decoded(user_id), None)
    features = inputs.get(USER_FEATURES_INPUT)
    if features is not None and features.size == 1:
        text = _decoded(features)
        try:
            parsed = json.loads(text)
        except ValueError:
            return f"raw:{text}"
        if isinstance(parsed, dict):
            return routing_key(None, parsed)
        return f"raw:{text}"
    return ""


def _decoded(value: np.ndarray) -> str:
    element = value.reshape(-1)[0]
    raw = element if isinstance(element, bytes) else str(element).encode("utf-8")
    return raw.decode("utf-8", errors="replace").strip()


def _provenance(served: ServedVersion) -> Outputs:
    return {
        MODEL_VERSION_OUTPUT: np.array([served.version], dtype=np.int32),
        COLLECTION_OUTPUT: _texts([served.collection]),
    }


def _texts(values: list[str]) -> np.ndarray:
    return np.array([value.encode("utf-8") for value in values], dtype=np.object_)


def _required(inputs: Inputs, name: str) -> np.ndarray:
    value = inputs.get(name)
    if value is None:
        raise InvalidInputError(f"{name} is missing; send it", input_name=name)
    return value
