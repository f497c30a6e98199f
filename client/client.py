"""A gRPC client for ``recommend_ensemble`` on tritonclient.

Server errors come back as ECRS exceptions: NOT_FOUND as ``NotFoundError``,
INVALID_ARGUMENT as ``InvalidInputError``, an unreachable server or an
UNAVAILABLE store as ``UnavailableError``.
"""

from __future__ import annotations

import json
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
MODEL_NAME = "recommend_ensemble"
OUTPUT_NAMES = ("ITEM_IDS", "SCORES", "ITEM_DETAILS", "UNKNOWN_FEATURES")


@dataclass(frozen=True)
class RecommendedItem:
    item_id: str
    score: float
    details: dict[str, str]


class Recommendations(list):
    """A list of recommended items, best first, that also names unknown user features.

    ``unknown_features`` names the user features whose values the served
    version did not see in training; the models read those as unknown.
    """

    def __init__(
        self, items: Sequence[RecommendedItem], unknown_features: Sequence[str] = ()
    ) -> None:
        super().__init__(items)
        self.unknown_features = list(unknown_features)


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
    ) -> Recommendations:
        """Recommend for a known ``user_id`` or a new user's ``user_features``.

        With ``exclude_seen``, items the user interacted with are left out.
        """
        inputs = request_inputs(
            user_id=user_id,
            user_features=user_features,
            top_n=top_n,
            exclude_seen=exclude_seen,
        )
        try:
            result = self._client.infer(
                MODEL_NAME,
                inputs,
                outputs=[
                    grpcclient.InferRequestedOutput(name)
                    for name in OUTPUT_NAMES
                ],
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as exc:
            raise server_error(exc, self.url) from exc
        return parse_result(result)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RecommendClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def request_inputs(
    *,
    user_id: str | None,
    user_features: Mapping[str, Any] | None,
    top_n: int | None,
    exclude_seen: bool = False,
) -> list[grpcclient.InferInput]:
    if (user_id is None) == (user_features is None):
        raise InvalidInputError(
            "pass exactly one of user_id and user_features", input_name="USER_ID"
        )
    if user_id is not None:
        inputs = [_bytes_input("USER_ID", user_id.encode("utf-8"))]
    else:
        payload = json.dumps(dict(user_features or {}), ensure_ascii=False)
        inputs = [_bytes_input("USER_FEATURES", payload.encode("utf-8"))]
    if top_n is not None:
        top = grpcclient.InferInput("TOP_N", [1], "INT32")
        top.set_data_from_numpy(np.array([top_n], dtype=np.int32))
        inputs.append(top)
    if exclude_seen:
        flag = grpcclient.InferInput("EXCLUDE_SEEN", [1], "BOOL")
        flag.set_data_from_numpy(np.array([True]))
        inputs.append(flag)
    return inputs


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
    if ids is None or scores is None or details is None:
        return Recommendations([], unknown_features)
    items = [
        RecommendedItem(_text(item_id), float(score), json.loads(_text(detail)))
        for item_id, score, detail in zip(ids, scores, details)
    ]
    return Recommendations(items, unknown_features)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def server_error(exc: InferenceServerException, url: str) -> EcrsError:
    """Map a tritonclient exception to the matching ECRS exception."""
    status = str(exc.status() or "")
    message = exc.message() or str(exc)
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
