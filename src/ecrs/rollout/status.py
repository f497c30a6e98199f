"""The versions of a served repository: on disk, loaded, serving, searched."""

from __future__ import annotations

from dataclasses import dataclass

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ecrs.rollout.rollout import VersionManager
from ecrs.serving.layout import ONNX_MODELS, USER_TOWER, list_versions


@dataclass(frozen=True)
class VersionStatus:
    """One exported version: loaded or not, its role, and its collection."""

    version: int
    loaded: bool
    role: str
    collection: str
    vectors: int | None


def version_statuses(manager: VersionManager) -> list[VersionStatus]:
    """Describe every version on disk; ``vectors`` is None without a collection."""
    pointer = manager.current()
    roles = {pointer.version: "serving"}
    if pointer.canary_version is not None:
        roles[pointer.canary_version] = f"canary {pointer.canary_share:.0%}"
    if pointer.previous is not None:
        roles.setdefault(pointer.previous, "previous")
    statuses = []
    with grpcclient.InferenceServerClient(manager.triton_url) as client:
        for version in list_versions(manager.repository, USER_TOWER):
            collection = manager.vectors.collection(version)
            has_vectors = manager.vectors.has_collection(collection)
            statuses.append(
                VersionStatus(
                    version,
                    _is_loaded(client, version),
                    roles.get(version, ""),
                    collection,
                    manager.vectors.count(collection) if has_vectors else None,
                )
            )
    return statuses


def format_statuses(statuses: list[VersionStatus]) -> str:
    lines = [f"{'version':<8} {'loaded':<7} {'role':<12} collection"]
    for status in statuses:
        vectors = "missing" if status.vectors is None else f"{status.vectors} vectors"
        lines.append(
            f"{status.version:<8} {'yes' if status.loaded else 'no':<7} "
            f"{status.role:<12} {status.collection} ({vectors})"
        )
    return "\n".join(lines)


def _is_loaded(client: grpcclient.InferenceServerClient, version: int) -> bool:
    try:
        return all(client.is_model_ready(name, str(version)) for name in ONNX_MODELS)
    except InferenceServerException:
        return False
