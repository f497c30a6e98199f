"""A gRPC client for the served ECRS models on tritonclient.

``RecommendClient`` calls ``recommend_ensemble`` and the single-step models:
``user_lookup``, ``item_lookup``, ``recall_candidates`` and ``rank_items``.

Server errors come back as ECRS exceptions: NOT_FOUND as ``NotFoundError``,
INVALID_ARGUMENT as ``InvalidInputError``, an unreachable server, a model
Triton has not loaded or an UNAVAILABLE store as ``UnavailableError``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ecrs.errors import (
    ConfigError,
    EcrsError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)

DEFAULT_URL = "127.0.0.1:8001"
# Maximum wait between two reconnection attempts. gRPC's default grows to
# 120 s, and all channels of a process to one address share it, so a client
# that saw Triton down for a minute kept failing for many seconds after
# Triton was back (measured: 4 s after a 40 s outage, up to two minutes).
MAX_RECONNECT_BACKOFF_MS = 1000
# Text in Triton's NOT_FOUND message for a model it has not loaded, such as
# while it starts, stops or unloads the model.
UNKNOWN_MODEL = "Request for unknown model"
MODEL_NAME = "recommend_ensemble"
OUTPUT_NAMES = (
    "ITEM_IDS",
    "SCORES",
    "ITEM_DETAILS",
    "UNKNOWN_FEATURES",
    "MODEL_VERSION",
    "COLLECTION",
)


@dataclass(frozen=True)
class RecommendedItem:
    item_id: str
    score: float
    details: dict[str, str]


class Recommendations(list):
    """A list of recommended items, best first, that also names unknown user features.

    ``unknown_features`` names the user features whose values the served
    version did not see in training; the models read those as unknown.
    ``model_version`` and ``collection`` name the exported version and the
    Milvus collection that produced the list (None from an older server).
    """

    def __init__(
        self,
        items: Sequence[RecommendedItem],
        unknown_features: Sequence[str] = (),
        *,
        model_version: int | None = None,
        collection: str | None = None,
    ) -> None:
        super().__init__(items)
        self.unknown_features = list(unknown_features)
        self.model_version = model_version
        self.collection = collection


@dataclass(frozen=True)
class UserProfile:
    """A user's stored raw features and recent item ids, most recent first."""

    features: dict[str, str]
    recent_items: list[str]


@dataclass(frozen=True)
class ItemLookup:
    """Item details by id, in request order, and the ids not found."""

    items: dict[str, dict[str, str]]
    missing: list[str]


@dataclass(frozen=True)
class RankedItems:
    """(item id, score) pairs, best first, and the ids not found."""

    items: list[tuple[str, float]]
    missing: list[str]


class RecommendClient:
    """Request recommendations from a Triton server over gRPC."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        timeout_s: float = 10.0,
        root_certificates: str | None = None,
        private_key: str | None = None,
        certificate_chain: str | None = None,
    ) -> None:
        """Open a channel to ``url`` (host:port).

        Any of the PEM file paths turns on TLS. ``root_certificates`` verifies
        a server that runs with ``--grpc-use-ssl=true``. ``private_key`` and
        ``certificate_chain`` identify this client to a server that runs with
        ``--grpc-use-ssl-mutual=true``.
        """
        self.url = url
        self.timeout_s = timeout_s
        files = [root_certificates, private_key, certificate_chain]
        # Checked here because tritonclient fails on a missing file half-way
        # through its constructor.
        for path in files:
            if path is not None and not Path(path).is_file():
                raise ConfigError(
                    f"the TLS file {path} does not exist; pass the path of a PEM file"
                )
        self._client = grpcclient.InferenceServerClient(
            url=url,
            channel_args=channel_args(),
            ssl=any(files),
            root_certificates=root_certificates,
            private_key=private_key,
            certificate_chain=certificate_chain,
        )

    def recommend(
        self,
        *,
        user_id: str | None = None,
        user_features: Mapping[str, Any] | None = None,
        top_n: int | None = None,
        exclude_seen: bool = False,
        filters: Mapping[str, Sequence[str]] | None = None,
        cap: Mapping[str, int] | None = None,
        model_version: int | None = None,
    ) -> Recommendations:
        """Recommend for a known ``user_id`` or a new user's ``user_features``.

        With ``exclude_seen``, items the user interacted with are left out.
        ``filters`` keeps only items whose column has one of the listed values,
        such as ``{"category": ["shoes"]}``, and ``cap`` limits how many results
        share one value of a column, such as ``{"brand": 2}``. ``model_version``
        pins an exported version instead of the one the serving pointer picks.
        """
        inputs = request_inputs(
            user_id=user_id,
            user_features=user_features,
            top_n=top_n,
            exclude_seen=exclude_seen,
        )
        if model_version is not None:
            inputs.append(_int_input("MODEL_VERSION", model_version))
        for name, value in (("FILTER", filters), ("CAP", cap)):
            if value is not None:
                payload = json.dumps(dict(value), ensure_ascii=False)
                inputs.append(_bytes_input(name, payload.encode("utf-8")))
        return parse_result(self.infer(MODEL_NAME, inputs, OUTPUT_NAMES))

    def user(self, user_id: str) -> UserProfile:
        """Return a known user's stored raw features and recent items."""
        result = self.infer(
            "user_lookup",
            [_bytes_input("USER_ID", user_id.encode("utf-8"))],
            ("USER_FEATURES", "RECENT_ITEMS"),
        )
        features = json.loads(_text(result.as_numpy("USER_FEATURES")[0]))
        return UserProfile(features, _texts(result.as_numpy("RECENT_ITEMS")))

    def items(self, item_ids: Sequence[str]) -> ItemLookup:
        """Return the details of the ``item_ids`` found and the ids not found."""
        result = self.infer(
            "item_lookup",
            [_ids_input("ITEM_IDS", item_ids)],
            ("ITEM_IDS", "ITEM_DETAILS", "MISSING_IDS"),
        )
        found = _texts(result.as_numpy("ITEM_IDS"))
        details = [json.loads(text) for text in _texts(result.as_numpy("ITEM_DETAILS"))]
        return ItemLookup(dict(zip(found, details)), _texts(result.as_numpy("MISSING_IDS")))

    def recall(
        self,
        *,
        user_id: str | None = None,
        user_features: Mapping[str, Any] | None = None,
        candidates: int | None = None,
        exclude_seen: bool = False,
    ) -> list[tuple[str, float]]:
        """Return recall candidates as (item id, similarity), most similar first."""
        inputs = user_inputs(user_id, user_features)
        if candidates is not None:
            inputs.append(_int_input("CANDIDATES", candidates))
        if exclude_seen:
            inputs.append(_flag_input("EXCLUDE_SEEN"))
        result = self.infer("recall_candidates", inputs, ("ITEM_IDS", "SIMILARITIES"))
        ids = _texts(result.as_numpy("ITEM_IDS"))
        similarities = result.as_numpy("SIMILARITIES")
        return [(item_id, float(value)) for item_id, value in zip(ids, similarities)]

    def rank(
        self,
        item_ids: Sequence[str],
        *,
        user_id: str | None = None,
        user_features: Mapping[str, Any] | None = None,
    ) -> RankedItems:
        """Score ``item_ids`` for a user, best first; unknown ids come back as missing."""
        inputs = [*user_inputs(user_id, user_features), _ids_input("ITEM_IDS", item_ids)]
        result = self.infer(
            "rank_items", inputs, ("ITEM_IDS", "SCORES", "MISSING_IDS")
        )
        ranked = list(
            zip(_texts(result.as_numpy("ITEM_IDS")), map(float, result.as_numpy("SCORES")))
        )
        return RankedItems(ranked, _texts(result.as_numpy("MISSING_IDS")))

    def infer(
        self,
        model: str,
        inputs: list[grpcclient.InferInput],
        output_names: Sequence[str],
    ) -> grpcclient.InferResult:
        """Run one request on ``model``; server errors raise ECRS exceptions.

        Each request gets a fresh id, which the server's log lines about it
        carry.
        """
        try:
            return self._client.infer(
                model,
                inputs,
                outputs=[grpcclient.InferRequestedOutput(name) for name in output_names],
                client_timeout=self.timeout_s,
                request_id=uuid.uuid4().hex,
            )
        except InferenceServerException as exc:
            raise server_error(exc, self.url) from exc

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RecommendClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def channel_args() -> list[tuple[str, int]]:
    """Return tritonclient's default gRPC channel arguments with the
    reconnection backoff bounded by ``MAX_RECONNECT_BACKOFF_MS``."""
    unlimited = 2**31 - 1
    return [
        ("grpc.max_send_message_length", unlimited),
        ("grpc.max_receive_message_length", unlimited),
        ("grpc.keepalive_time_ms", unlimited),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", False),
        ("grpc.http2.max_pings_without_data", 2),
        ("grpc.initial_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS // 2),
        ("grpc.min_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS // 2),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
    ]


def request_inputs(
    *,
    user_id: str | None,
    user_features: Mapping[str, Any] | None,
    top_n: int | None,
    exclude_seen: bool = False,
) -> list[grpcclient.InferInput]:
    inputs = user_inputs(user_id, user_features)
    if top_n is not None:
        inputs.append(_int_input("TOP_N", top_n))
    if exclude_seen:
        inputs.append(_flag_input("EXCLUDE_SEEN"))
    return inputs


def user_inputs(
    user_id: str | None, user_features: Mapping[str, Any] | None
) -> list[grpcclient.InferInput]:
    """Return the USER_ID input of a known user or the USER_FEATURES of a new one."""
    if (user_id is None) == (user_features is None):
        raise InvalidInputError(
            "pass exactly one of user_id and user_features", input_name="USER_ID"
        )
    if user_id is not None:
        return [_bytes_input("USER_ID", user_id.encode("utf-8"))]
    payload = json.dumps(dict(user_features or {}), ensure_ascii=False)
    return [_bytes_input("USER_FEATURES", payload.encode("utf-8"))]


def _int_input(name: str, value: int) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1], "INT32")
    tensor.set_data_from_numpy(np.array([value], dtype=np.int32))
    return tensor


def _flag_input(name: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1], "BOOL")
    tensor.set_data_from_numpy(np.array([True]))
    return tensor


def _ids_input(name: str, ids: Sequence[str]) -> grpcclient.InferInput:
    values = np.array([str(item).encode("utf-8") for item in ids], dtype=np.object_)
    tensor = grpcclient.InferInput(name, [len(values)], "BYTES")
    tensor.set_data_from_numpy(values)
    return tensor


def _bytes_input(name: str, value: bytes) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([value], dtype=np.object_))
    return tensor


def parse_result(result: grpcclient.InferResult) -> Recommendations:
    ids = result.as_numpy("ITEM_IDS")
    scores = result.as_numpy("SCORES")
    details = result.as_numpy("ITEM_DETAILS")
    unknown = result.as_numpy("UNKNOWN_FEATURES")
    unknown_features = [] if unknown is None else [_text(name) for name in unknown]
    version = result.as_numpy("MODEL_VERSION")
    collection = result.as_numpy("COLLECTION")
    provenance = {
        "model_version": None if version is None else int(version.reshape(-1)[0]),
        "collection": None if collection is None else _text(collection.reshape(-1)[0]),
    }
    if ids is None or scores is None or details is None:
        return Recommendations([], unknown_features, **provenance)
    items = [
        RecommendedItem(_text(item_id), float(score), json.loads(_text(detail)))
        for item_id, score, detail in zip(ids, scores, details)
    ]
    return Recommendations(items, unknown_features, **provenance)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _texts(values: np.ndarray | None) -> list[str]:
    return [] if values is None else [_text(value) for value in values]


def server_error(exc: InferenceServerException, url: str) -> EcrsError:
    """Map a tritonclient exception to the matching ECRS exception."""
    status = str(exc.status() or "")
    message = exc.message() or str(exc)
    if "NOT_FOUND" in status and UNKNOWN_MODEL in message:
        return UnavailableError(
            f"Triton at {url} has not loaded the model: {message}; retry in a "
            "few seconds if Triton is starting or stopping or the model is "
            "reloading, else check that the model is in Triton's repository "
            "and the stack runs ('ecrs stack status')",
            service="triton",
        )
    if "NOT_FOUND" in status:
        return NotFoundError(message, kind="user", id="")
    if "INVALID_ARGUMENT" in status:
        return InvalidInputError(message, input_name="")
    if "UNAVAILABLE" in status and "failed to connect" not in message.lower():
        # A store behind the server is down; its message names it and the fix.
        return UnavailableError(message, service="triton")
    if "UNAVAILABLE" in status or "DEADLINE_EXCEEDED" in status:
        return UnavailableError(
            f"Triton at {url}: {message}; check that the stack is running "
            "('ecrs stack status')",
            service="triton",
        )
    return EcrsError(f"Triton at {url} returned {status or 'an error'}: {message}")
