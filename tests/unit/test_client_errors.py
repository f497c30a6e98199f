"""How the client maps Triton's error statuses to ECRS exceptions."""

from __future__ import annotations

import pytest
from ecrs.client.client import server_error
from tritonclient.utils import InferenceServerException

from ecrs.errors import EcrsError, NotFoundError, UnavailableError

URL = "127.0.0.1:8001"


def mapped(status: str, message: str) -> EcrsError:
    return server_error(InferenceServerException(message, status=status), URL)


def test_unknown_user_is_not_found():
    error = mapped("StatusCode.NOT_FOUND", "user u999 is not in the stores")
    assert type(error) is NotFoundError


@pytest.mark.parametrize(
    "message",
    [
        "Request for unknown model: 'recommend_ensemble' has no available versions",
        "Request for unknown model: 'recommend_ensemble' is not found",
    ],
)
def test_model_triton_has_not_loaded_is_unavailable(message):
    """While Triton stops, starts or reloads a model, it answers NOT_FOUND for
    the model; a caller must read that as retryable, not as an unknown user."""
    error = mapped("StatusCode.NOT_FOUND", message)
    assert isinstance(error, UnavailableError)
    assert URL in str(error)
    assert "retry" in str(error)


def test_unavailable_store_keeps_its_message():
    message = "Redis at redis://127.0.0.1:6379/0 is unavailable (ping)"
    error = mapped("StatusCode.UNAVAILABLE", message)
    assert isinstance(error, UnavailableError)
    assert str(error).startswith(message)


def test_other_status_names_the_server_and_status():
    error = mapped("StatusCode.INTERNAL", "boom")
    assert type(error) is EcrsError
    assert "StatusCode.INTERNAL" in str(error)
    assert URL in str(error)
