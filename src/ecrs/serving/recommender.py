"""The two-stage request path: user features, recall, item features, ranking.

``Recommender`` holds no Triton code. The served ``recommend_ensemble`` model
passes it functions that run ``user_tower`` and ``deepfm_rank`` through BLS
calls; tests and offline tools pass functions that run the same ONNX files
with onnxruntime, so both paths share every other step.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ecrs.errors import InvalidInputError, NotFoundError
from ecrs.features.encoder import RECENT_ITEMS, FeatureEncoder
from ecrs.serving.filters import ItemFilter
from ecrs.serving.item_cache import ItemCache
from ecrs.serving.json_input import parse_json_object
from ecrs.serving.scoring import Scoring
from ecrs.serving.stages import (
    ITEM_FEATURES,
    RANKING,
    USER_FEATURES,
    USER_TOWER,
    VECTOR_SEARCH,
    StageTimer,
)
from ecrs.stores.feature_store import FeatureStore
from ecrs.stores.vector_store import VectorStore

# Run a tower on id rows [batch, slots]; returns vectors [batch, dim].
TowerFn = Callable[[np.ndarray], np.ndarray]
# Score aligned user and item id rows; returns scores [batch].
RankFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

USER_ID_INPUT = "USER_ID"
USER_FEATURES_INPUT = "USER_FEATURES"
TOP_N_INPUT = "TOP_N"
EXCLUDE_SEEN_INPUT = "EXCLUDE_SEEN"
# The maximum number of results of one Milvus search (its topk limit).
MAX_SEARCH = 16384
# Recent items a user lookup returns when the models read none.
DEFAULT_RECENT_ITEMS = 20


@dataclass(frozen=True)
class Recommendation:
    """Ranked items, best first, with their raw details as JSON bytes.

    ``scores`` are the version's ranking scores (see ``Scoring``): DeepFM's
    logit plus the weighted recall similarity, higher is better.

    ``unknown_features`` names the user features whose values the served
    version did not see in training, so the models read them as unknown.
    """

    item_ids: list[str]
    scores: np.ndarray
    details: list[bytes]
    unknown_features: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class User:
    """An encoded user row ``[1, slots]`` and the item ids to leave out."""

    row: np.ndarray
    seen: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ItemLookup:
    """Items found, with their details as JSON bytes, and the ids not found."""

    item_ids: list[str]
    details: list[bytes]
    missing: list[str]


@dataclass(frozen=True)
class Candidates:
    """Recall output: item ids with their inner product with the user vector.

    ``details`` is each item's stored JSON when it was already read from
    Redis, so that ranking does not read it again.
    """

    item_ids: list[str]
    similarities: np.ndarray
    details: list[bytes] | None = None


class Recommender:
    """Recommend items for a known user id or a new user's raw features."""

    def __init__(
        self,
        *,
        encoder: FeatureEncoder,
        features: FeatureStore,
        vectors: VectorStore,
        collection: str,
        user_tower: TowerFn,
        ranker: RankFn,
        candidates: int = 200,
        search_params: dict | None = None,
        scoring: Scoring | None = None,
        item_tower: TowerFn | None = None,
        timer: StageTimer | None = None,
        item_cache: ItemCache | None = None,
    ) -> None:
        self.encoder = encoder
        self.features = features
        self.vectors = vectors
        self.collection = collection
        self.user_tower = user_tower
        self.ranker = ranker
        self.candidates = candidates
        self.search_params = search_params
        self.scoring = scoring or Scoring()
        self.item_tower = item_tower
        self.timer = timer or StageTimer()
        self.item_cache = item_cache

    def user(
        self,
        *,
        user_id: str | None = None,
        user_features: Mapping[str, Any] | None = None,
        exclude_seen: bool = False,
    ) -> User:
        """Encode a known user (read from Redis) or a new user.

        A known user's row carries their recent items. With ``exclude_seen``,
        the items they interacted with are returned to be left out; a new
        user has none.
        """
        with self.timer.stage(USER_FEATURES):
            return self._user(user_id, user_features, exclude_seen)

    def _user(
        self,
        user_id: str | None,
        user_features: Mapping[str, Any] | None,
        exclude_seen: bool,
    ) -> User:
        if user_id is not None:
            history = self.encoder.users.history_length
            stored, items = self.features.get_user_with_items(
                user_id, history, all_items=exclude_seen
            )
            if stored is None:
                raise NotFoundError(
                    f"user id {user_id!r} is not in the feature store; send a known "
                    f"id, or send the user's raw features in {USER_FEATURES_INPUT}",
                    kind="user",
                    id=user_id,
                )
            if history:
                stored = {**stored, RECENT_ITEMS: items[:history]}
            row = self.encoder.encode_users([user_id], [stored])
            return User(row, frozenset(items) if exclude_seen else frozenset())
        if user_features is None:
            raise InvalidInputError(
                f"send {USER_ID_INPUT} for a known user or {USER_FEATURES_INPUT} for a new one",
                input_name=USER_ID_INPUT,
            )
        return User(self.encoder.encode_users([None], [user_features]))

    def lookup_user(self, user_id: str) -> tuple[dict[str, str], list[str]]:
        """Return a known user's raw features and recent items, most recent first."""
        history = self.encoder.users.history_length or DEFAULT_RECENT_ITEMS
        stored, items = self.features.get_user_with_items(user_id, history)
        if stored is None:
            raise NotFoundError(
                f"user id {user_id!r} is not in the feature store; check the id",
                kind="user",
                id=user_id,
            )
        return stored, items

    def lookup_items(self, item_ids: list[str]) -> ItemLookup:
        """Return the stored details of the ids found and list the others."""
        stored = self.features.get_items_raw(item_ids)
        found = [i for i, raw in enumerate(stored) if raw is not None]
        return ItemLookup(
            [item_ids[i] for i in found],
            [stored[i] for i in found],
            [item_id for item_id, raw in zip(item_ids, stored) if raw is None],
        )

    def rank_items(self, user: User, item_ids: list[str]) -> tuple[Recommendation, list[str]]:
        """Score a caller's item list for ``user``, best first, as recommend scores.

        The recall similarity comes from the item tower run on the items'
        features. Ids not in the feature store are returned as missing.
        """
        lookup = self.lookup_items(item_ids)
        similarities = np.zeros(len(lookup.item_ids), np.float32)
        if self.item_tower is not None and lookup.item_ids:
            records = [json.loads(raw) for raw in lookup.details]
            item_rows = self.encoder.encode_items(lookup.item_ids, records)
            user_vector = self.user_tower(user.row)[0]
            similarities = self.item_tower(item_rows) @ user_vector
        candidates = Candidates(lookup.item_ids, similarities, lookup.details)
        ranked = self.rank(user.row, candidates, len(lookup.item_ids))
        return ranked, lookup.missing

    def recall(
        self,
        user_row: np.ndarray,
        limit: int | None = None,
        exclude: frozenset[str] = frozenset(),
        expression: str = "",
    ) -> Candidates:
        """Search the collection with the user tower's vector.

        Items in ``exclude`` are left out: the search requests that many more
        results and drops them, so ``limit`` candidates remain whenever the
        collection has enough other items. A non-empty ``expression``
        restricts the search to items whose fields match it.
        """
        limit = limit or self.candidates
        with self.timer.stage(USER_TOWER):
            vector = self.user_tower(user_row)[0]
        with self.timer.stage(VECTOR_SEARCH):
            ids, similarities = self.vectors.search(
                self.collection,
                vector,
                limit + len(exclude),
                self.search_params,
                expression=expression,
            )
        if exclude:
            kept = [i for i, item_id in enumerate(ids) if item_id not in exclude][:limit]
            ids = [ids[i] for i in kept]
            similarities = np.asarray(similarities)[kept]
        return Candidates(ids, similarities)

    def rank(
        self, user_row: np.ndarray, candidates: Candidates, top_n: int
    ) -> Recommendation:
        """Score candidates that exist in the feature store and keep the best ``top_n``.

        A candidate whose features are gone (the item was removed after its
        vector was searched) is dropped, not reported as an error.
        """
        with self.timer.stage(ITEM_FEATURES):
            kept, details, item_rows = self._item_features(candidates)
        if not kept:
            return Recommendation([], np.zeros(0, np.float32), [])
        ids = [candidates.item_ids[i] for i in kept]
        with self.timer.stage(RANKING):
            user_rows = np.repeat(user_row, len(ids), axis=0)
            probabilities = np.asarray(self.ranker(user_rows, item_rows)).reshape(-1)
            similarities = np.asarray(candidates.similarities).reshape(-1)[kept]
            scores = self.scoring.blend(probabilities, similarities)
            # Stable sort keeps recall order among equal scores.
            order = np.argsort(-scores, kind="stable")[:top_n]
        return Recommendation(
            [ids[i] for i in order], scores[order], [details[i] for i in order]
        )

    def _item_features(
        self, candidates: Candidates
    ) -> tuple[list[int], list[bytes], np.ndarray]:
        """Return the positions of the candidates in the feature store, their
        stored JSON and their encoded rows, from the item cache where it can."""
        if self.item_cache is None or candidates.details is not None:
            stored = candidates.details
            if stored is None:
                stored = self.features.get_items_raw(candidates.item_ids)
            kept = [i for i, raw in enumerate(stored) if raw is not None]
            details = [stored[i] for i in kept]
            ids = [candidates.item_ids[i] for i in kept]
            return kept, details, self._encode_items(ids, details)
        cache = self.item_cache
        cache.check_generation(self.features.items_generation())
        # Items read now, which a full cache may not keep.
        fetched: dict[str, tuple[bytes, np.ndarray]] = {}
        missing = cache.missing(candidates.item_ids)
        if missing:
            stored = self.features.get_items_raw(missing)
            found = [(item_id, raw) for item_id, raw in zip(missing, stored) if raw]
            ids = [item_id for item_id, _ in found]
            details = [raw for _, raw in found]
            rows = self._encode_items(ids, details)
            cache.add(ids, details, rows)
            fetched = dict(zip(ids, zip(details, rows)))
        entries = [
            fetched.get(item_id) or cache.get(item_id) for item_id in candidates.item_ids
        ]
        kept = [i for i, entry in enumerate(entries) if entry is not None]
        if not kept:
            return [], [], self._encode_items([], [])
        return (
            kept,
            [entries[i][0] for i in kept],
            np.stack([entries[i][1] for i in kept]),
        )

    def _encode_items(self, ids: list[str], details: list[bytes]) -> np.ndarray:
        return self.encoder.encode_items(ids, [json.loads(raw) for raw in details])

    def recommend(
        self,
        *,
        top_n: int,
        user_id: str | None = None,
        user_features: Mapping[str, Any] | None = None,
        exclude_seen: bool = False,
        item_filter: ItemFilter | None = None,
    ) -> Recommendation:
        """Run recall and ranking for one user and return the best ``top_n``.

        With ``exclude_seen``, items the user interacted with are left out.
        ``item_filter`` keeps only qualifying items and caps how many share a
        value; the result still has ``top_n`` items whenever enough qualify.
        """
        item_filter = item_filter or ItemFilter()
        user = self.user(
            user_id=user_id, user_features=user_features, exclude_seen=exclude_seen
        )
        if item_filter.restricts or item_filter.caps:
            candidates = self.qualifying_candidates(user, item_filter, top_n)
        else:
            candidates = self.recall(user.row, exclude=user.seen)
        if item_filter.caps:
            ranked = self.rank(user.row, candidates, len(candidates.item_ids))
            records = [json.loads(raw) for raw in ranked.details]
            kept = item_filter.capped(records, top_n)
            ranked = Recommendation(
                [ranked.item_ids[i] for i in kept],
                ranked.scores[kept],
                [ranked.details[i] for i in kept],
            )
        else:
            ranked = self.rank(user.row, candidates, top_n)
        return replace(
            ranked, unknown_features=self.encoder.users.unknown_features(user.row[0])
        )

    def qualifying_candidates(
        self, user: User, item_filter: ItemFilter, top_n: int
    ) -> Candidates:
        """Recall up to ``candidates`` items that pass the filter, searching wider
        until they also fill ``top_n`` results under the caps.

        Filters on the collection's fields run inside the search. Each round
        requests four times as many results from Milvus, until enough
        qualify, the collection has no more matches, or the search reaches
        Milvus's limit of ``MAX_SEARCH`` results.
        """
        limit = self.candidates
        expression = item_filter.milvus_expression(
            self.vectors.filter_fields(self.collection)
        )
        while True:
            found = self.recall(
                user.row, limit, exclude=user.seen, expression=expression
            )
            with self.timer.stage(ITEM_FEATURES):
                stored = self.features.get_items_raw(found.item_ids)
                records = [None if raw is None else json.loads(raw) for raw in stored]
            keep = [
                i
                for i, record in enumerate(records)
                if record is not None and item_filter.accepts(record)
            ]
            enough = len(keep) >= self.candidates and (
                len(item_filter.capped([records[i] for i in keep], top_n)) >= top_n
            )
            exhausted = len(found.item_ids) < limit
            widest = limit + len(user.seen) >= MAX_SEARCH
            if enough or exhausted or widest:
                if not item_filter.caps:
                    keep = keep[: self.candidates]
                return Candidates(
                    [found.item_ids[i] for i in keep],
                    np.asarray(found.similarities)[keep],
                    [stored[i] for i in keep],
                )
            limit = min(limit * 4, MAX_SEARCH - len(user.seen))


def parse_user_features(
    raw: bytes | str, feature_names: list[str], required: Sequence[str] = ()
) -> dict[str, str]:
    """Parse and check a new user's ``USER_FEATURES`` JSON object.

    Every key must be a user feature of the served schema and every value a
    string or number (or null for a missing value); at least one feature must
    be present, so that a typo cannot silently recommend for an empty profile,
    and so must every ``required`` one.
    """
    parsed = parse_json_object(
        raw,
        USER_FEATURES_INPUT,
        hint=f"send a JSON object such as {_example(feature_names)}",
    )
    unknown = sorted(set(parsed) - set(feature_names))
    if unknown:
        raise InvalidInputError(
            f"{USER_FEATURES_INPUT} has unknown feature(s) {unknown}; "
            f"the user features are {feature_names}",
            input_name=USER_FEATURES_INPUT,
        )
    features = {}
    for name, value in parsed.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise InvalidInputError(
                f"{USER_FEATURES_INPUT} feature {name!r} has value {value!r}; "
                "values must be strings or numbers",
                input_name=USER_FEATURES_INPUT,
            )
        features[name] = str(value)
    if not any(str(value).strip() for value in features.values()):
        raise InvalidInputError(
            f"{USER_FEATURES_INPUT} has no feature values; send at least one of {feature_names}",
            input_name=USER_FEATURES_INPUT,
        )
    missing = [name for name in required if not features.get(name, "").strip()]
    if missing:
        raise InvalidInputError(
            f"{USER_FEATURES_INPUT} has no value for the required feature(s) "
            f"{missing}; send a value for each (got {features})",
            input_name=USER_FEATURES_INPUT,
        )
    return features


def _example(feature_names: list[str]) -> str:
    return json.dumps({name: "..." for name in feature_names[:3]})
