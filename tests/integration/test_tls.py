"""Triton serving gRPC over TLS with the flags that docs/deployment.md shows,
and the client verifying it with the CA's certificate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ecrs.client.client import RecommendClient

from ecrs.errors import UnavailableError

pytestmark = pytest.mark.integration

CLIENT_SCRIPT = str(Path(sys.executable).parent / "ecrs-client")


def known_user(dataset) -> str:
    return dataset.users[dataset.schema.users.id].iloc[0]


def test_tls_client_gets_recommendations(tls_triton, small_dataset):
    config, certificates = tls_triton
    with RecommendClient(
        config.triton_grpc_url, root_certificates=str(certificates["ca.crt"])
    ) as client:
        items = client.recommend(user_id=known_user(small_dataset), top_n=5)
    assert len(items) == 5


def test_plaintext_client_is_rejected(tls_triton, small_dataset):
    config, _ = tls_triton
    with RecommendClient(config.triton_grpc_url, timeout_s=5.0) as client:
        with pytest.raises(UnavailableError):
            client.recommend(user_id=known_user(small_dataset), top_n=5)


def test_client_command_with_ca_certificate(tls_triton, small_dataset):
    config, certificates = tls_triton
    result = subprocess.run(
        [
            CLIENT_SCRIPT,
            "--url", config.triton_grpc_url,
            "--root-certificates", str(certificates["ca.crt"]),
            "recommend", "--user-id", known_user(small_dataset),
            "--top-n", "3", "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 3
