"""The served recommend model without its Triton adapter.

``RecommendModel`` picks the exported version it serves, loads that
version's encoder and wires the stores to a ``Recommender``. The adapter in
``model_repository/recommend_ensemble/1/model.py`` supplies the BLS calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecrs.config import StoreConfig
from ecrs.errors import ConfigError
from ecrs.features.encoder import FeatureEncoder
from ecrs.serving.layout import USER_TOWER, latest_version
from ecrs.serving.recommender import RankFn, Recommendation, Recommender, TowerFn
from ecrs.serving.requests import parse_request
from ecrs.serving.scoring import Scoring
from ecrs.stores.feature_store import FeatureStore
from ecrs.stores.vector_store import VectorStore


@dataclass(frozen=True, kw_only=True)
class ModelParameters:
    """The ``parameters`` of recommend_ensemble's config.pbtxt."""

    default_top_n: int = 10
    max_top_n: int = 100
    candidates: int = 200


def model_parameters(config: Mapping[str, Any]) -> ModelParameters:
    """Read integer parameters from a parsed model config, checking each."""
    raw = config.get("parameters", {})
    values = {}
    for name in ("default_top_n", "max_top_n", "candidates"):
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
        )

    def recommend(self, inputs: Mapping[str, np.ndarray | None]) -> Recommendation:
        request = parse_request(
            inputs,
            feature_names=self.encoder.users.feature_names,
            default_top_n=self.parameters.default_top_n,
            max_top_n=self.parameters.max_top_n,
        )
        return self.recommender.recommend(
            top_n=request.top_n,
            user_id=request.user_id,
            user_features=request.user_features,
            exclude_seen=request.exclude_seen,
        )

    def close(self) -> None:
        self.vectors.close()
        self.features.client.close()
