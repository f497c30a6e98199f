"""Decode a request input that carries a JSON object, such as USER_FEATURES."""

from __future__ import annotations

import json
from typing import Any

from ecrs.errors import InvalidInputError

# The largest JSON object a request input may carry.
MAX_JSON_BYTES = 64 * 1024


def parse_json_object(raw: bytes | str, name: str, *, hint: str) -> dict[str, Any]:
    """Decode input ``name`` as a JSON object of at most ``MAX_JSON_BYTES`` bytes.

    ``hint`` ends each error message, telling the caller what to send.
    """
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    if len(data) > MAX_JSON_BYTES:
        raise InvalidInputError(
            f"{name} is {len(data)} bytes; send at most {MAX_JSON_BYTES} bytes of JSON",
            input_name=name,
        )
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(
            f"{name} is not valid UTF-8 JSON ({exc}); {hint}", input_name=name
        ) from exc
    if not isinstance(parsed, dict):
        raise InvalidInputError(
            f"{name} must be a JSON object, got {type(parsed).__name__}; {hint}",
            input_name=name,
        )
    return parsed
