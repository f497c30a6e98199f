"""Read and change the served repository's ``config.pbtxt`` files.

The served ONNX models' configs list the versions Triton loads
(``version_policy: { specific { versions: [...] } }``), so the files on
disk, not the last repository API call, decide what a restarted Triton
serves.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from ecrs.errors import ExportError
from ecrs.serving.layout import CONFIG_FILE, ONNX_MODELS, USER_TOWER


def live_versions(served: Path) -> list[int]:
    """Return the versions the served ONNX configs tell Triton to load.

    An empty list means the repository has no served config yet.
    """
    path = Path(served) / USER_TOWER / CONFIG_FILE
    if not path.exists():
        return []
    return sorted(read_config(path).version_policy.specific.versions)


def set_live_versions(served: Path, versions: list[int]) -> None:
    """Make every ONNX model's served config load exactly ``versions``.

    Triton reads the list whenever a model is loaded, so a load through the
    repository API then adds and removes versions. Versions in both the old
    and the new list keep serving meanwhile.
    """
    for name in ONNX_MODELS:
        path = Path(served) / name / CONFIG_FILE
        config = read_config(path)
        set_versions(config, versions)
        path.write_text(text_format.MessageToString(config), encoding="utf-8")


def set_versions(config: model_config_pb2.ModelConfig, versions: list[int]) -> None:
    config.version_policy.specific.ClearField("versions")
    config.version_policy.specific.versions.extend(sorted(set(versions)))


def read_config(path: Path) -> model_config_pb2.ModelConfig:
    try:
        return text_format.Parse(
            path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig()
        )
    except text_format.ParseError as exc:
        raise ExportError(f"{path} is not a valid model configuration: {exc}") from exc
