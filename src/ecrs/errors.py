"""Exceptions raised by ECRS.

Every error derives from ``EcrsError``. Errors caused by data or input carry the
offending value in their message; errors of a store or server name its address.

    EcrsError
    ├── DataError            a data set, schema or row is invalid
    ├── ConfigError          a setting or command-line value is invalid
    ├── NotFoundError        a user or item id is not in the stores
    ├── InvalidInputError    a request input is malformed
    ├── UnavailableError     Redis, Milvus or Triton cannot be reached
    ├── ModelError           a model called through BLS returned an error
    ├── ExportError          an export failed, including a parity check
    ├── RolloutError         a rollout step failed; the serving version stays
    └── StackError           a local server failed to start or stop
"""

from __future__ import annotations


class EcrsError(Exception):
    """Root of every exception raised by ECRS.

    ``status`` is the name of the Triton error code (a ``TritonError``
    attribute) that a request error maps to, or None for any other error.
    """

    status: str | None = None


class DataError(EcrsError):
    """A data set, its schema or one of its rows is invalid."""


class ConfigError(EcrsError):
    """A setting or command-line value is invalid."""


class NotFoundError(EcrsError):
    """A user or item id does not exist in the stores."""

    status = "NOT_FOUND"

    def __init__(self, message: str, *, kind: str, id: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.id = id


class InvalidInputError(EcrsError):
    """A request input is malformed; ``input_name`` names the tensor."""

    status = "INVALID_ARG"

    def __init__(self, message: str, *, input_name: str) -> None:
        super().__init__(message)
        self.input_name = input_name


class UnavailableError(EcrsError):
    """A dependency (Redis, Milvus, a Triton model) cannot be reached."""

    status = "UNAVAILABLE"

    def __init__(self, message: str, *, service: str) -> None:
        super().__init__(message)
        self.service = service


class ModelError(EcrsError):
    """A model called through BLS failed; ``status`` is its Triton error code."""

    def __init__(self, message: str, *, status: str) -> None:
        super().__init__(message)
        self.status = status


class ExportError(EcrsError):
    """Exporting a model failed, for example its ONNX output differs from Paddle's."""


class RolloutError(EcrsError):
    """A step of a rollout, rollback or promotion failed.

    ``step`` names it (export, vectors, load, warm-up, quality gate, switch).
    """

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"rollout step '{step}' failed: {message}")
        self.step = step


class StackError(EcrsError):
    """A local server failed to start, become ready or stop."""


def internal_error_message(exc: BaseException, request_id: str) -> str:
    """Return the message a request gets for an exception ECRS did not expect.

    It gives the exception's type and text, not its repr: pymilvus's
    exceptions keep their code and message out of repr().
    """
    return (
        f"internal error ({type(exc).__name__}): {exc}; the traceback of "
        f"request {request_id} is in Triton's log"
    )
