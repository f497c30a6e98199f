"""Build the served Triton model repository from the source one in git.

``model_repository/`` in git contains every model's ``config.pbtxt`` and the
Python models' code. Exporting a checkpoint copies those into the served
repository (in the state folder, never in git), adds a new version folder
``<N>/model.onnx`` to each ONNX model, saves the checkpoint's encoder and scoring beside
each ``model.onnx``, and fills in the tensor dims that depend on the data
set's schema.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ecrs.export.onnx import OnnxModel, TensorSpec, check_parity, export_onnx
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from ecrs.errors import ExportError
from ecrs.features.encoder import FeatureEncoder
from ecrs.serving.layout import (
    CONFIG_FILE,
    DEEPFM_RANK,
    ITEM_TOWER,
    ONNX_MODELS,
    RECOMMEND,
    USER_TOWER,
    next_version,
)
from ecrs.serving.model_configs import live_versions, read_config, set_versions
from ecrs.training.checkpoint import Checkpoint

logger = logging.getLogger(__name__)

PARITY_ROWS = 256
# The instance_group kind written into the ONNX models' configs, by device.
DEVICES = {
    "cpu": model_config_pb2.ModelInstanceGroup.KIND_CPU,
    "gpu": model_config_pb2.ModelInstanceGroup.KIND_GPU,
}


@dataclass(frozen=True)
class ExportResult:
    """Summary of one export: the version number and each model's parity."""

    repository: Path
    version: int
    parity: dict[str, float]


def source_repository() -> Path:
    """Locate ``model_repository/`` of the source tree or the installed package.

    Both sit two levels above this file: beside ``export/`` in a checkout, and
    as ``ecrs/model_repository`` in an installed package.
    """
    here = Path(__file__).resolve()
    candidate = here.parents[1] / "model_repository"
    if (candidate / RECOMMEND / CONFIG_FILE).exists():
        return candidate
    raise ExportError(
        f"cannot find the source model_repository near {here}; "
        "pass --source-repository with the path of the repository's model_repository/"
    )


def onnx_models(checkpoint: Checkpoint) -> list[OnnxModel]:
    """Describe the three ONNX models of a checkpoint with their tensor names."""
    users = checkpoint.encoder.users.width
    items = checkpoint.encoder.items.width
    dim = checkpoint.two_tower.user_tower.config.output_dim
    user_ids = TensorSpec("USER_FEATURE_IDS", "int64", (users,))
    item_ids = TensorSpec("ITEM_FEATURE_IDS", "int64", (items,))
    return [
        OnnxModel(
            USER_TOWER,
            checkpoint.two_tower.user_tower,
            (user_ids,),
            (TensorSpec("USER_EMBEDDING", "float32", (dim,)),),
        ),
        OnnxModel(
            ITEM_TOWER,
            checkpoint.two_tower.item_tower,
            (item_ids,),
            (TensorSpec("ITEM_EMBEDDING", "float32", (dim,)),),
        ),
        OnnxModel(
            DEEPFM_RANK,
            checkpoint.deepfm,
            (user_ids, item_ids),
            (TensorSpec("SCORE", "float32", (1,)),),
        ),
    ]


def export_checkpoint(
    checkpoint: Checkpoint,
    served: Path,
    *,
    source: Path | None = None,
    version: int | None = None,
    device: str = "cpu",
) -> ExportResult:
    """Export ``checkpoint`` as a new version of every ONNX model in ``served``.

    ``device`` ("cpu" or "gpu") sets the instance kind of the ONNX models'
    served configs; Triton's native ONNX Runtime backend runs KIND_GPU
    instances with the CUDA execution provider. Raises ``ExportError`` when a
    model's ONNX output differs from Paddle's, before anything in ``served``
    is changed.
    """
    if device not in DEVICES:
        raise ExportError(
            f"device {device!r} is invalid; export for one of {', '.join(DEVICES)}"
        )
    source = source or source_repository()
    version = version or next_version(served)
    staging = served.parent / f".{served.name}-staging-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    parity = {}
    try:
        for model in onnx_models(checkpoint):
            folder = staging / model.name / str(version)
            onnx_path = export_onnx(model, folder / "model.onnx")
            parity[model.name] = check_parity(
                model, onnx_path, sample_feeds(model, checkpoint.encoder)
            )
            checkpoint.encoder.save(folder)
            checkpoint.scoring().save(folder)
        live = live_versions(served) or [version]
        copy_source(source, served)
        for model in onnx_models(checkpoint):
            write_config(
                source / model.name,
                served / model.name,
                model,
                device=device,
                versions=live,
            )
            target = served / model.name / str(version)
            shutil.rmtree(target, ignore_errors=True)
            shutil.move(str(staging / model.name / str(version)), str(target))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("exported version %d into %s", version, served)
    return ExportResult(served, version, parity)


def copy_source(source: Path, served: Path) -> None:
    """Copy each model's files from the source repository, except version folders
    of ONNX models, which only export writes."""
    for model_folder in sorted(path for path in source.iterdir() if path.is_dir()):
        target = served / model_folder.name
        target.mkdir(parents=True, exist_ok=True)
        for entry in model_folder.iterdir():
            if entry.name == "__pycache__":
                continue
            if entry.is_dir():
                if model_folder.name in ONNX_MODELS:
                    continue
                shutil.copytree(
                    entry,
                    target / entry.name,
                    dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"),
                )
            else:
                shutil.copy2(entry, target / entry.name)


def write_config(
    source_model: Path,
    served_model: Path,
    model: OnnxModel,
    *,
    device: str = "cpu",
    versions: list[int],
) -> None:
    """Write the served ``config.pbtxt`` with the exported tensors' dims, the
    instance kind of ``device``, and the ``versions`` Triton loads."""
    config = read_config(source_model / CONFIG_FILE)
    for group in config.instance_group:
        group.kind = DEVICES[device]
    set_versions(config, versions)
    declared = {tensor.name: tensor for tensor in [*config.input, *config.output]}
    for spec in [*model.inputs, *model.outputs]:
        tensor = declared.get(spec.name)
        if tensor is None:
            raise ExportError(
                f"{source_model / CONFIG_FILE} declares no tensor {spec.name!r}, "
                f"which the exported {model.name} has; add it to the config"
            )
        del tensor.dims[:]
        tensor.dims.extend(spec.dims)
    (served_model / CONFIG_FILE).write_text(
        text_format.MessageToString(config), encoding="utf-8"
    )


def sample_feeds(model: OnnxModel, encoder: FeatureEncoder) -> dict[str, np.ndarray]:
    """Draw id rows covering every field's range, missing and OOV ids included."""
    rng = np.random.default_rng(0)
    fields = {"USER_FEATURE_IDS": encoder.users, "ITEM_FEATURE_IDS": encoder.items}
    feeds = {}
    for tensor in model.inputs:
        columns = []
        for field in fields[tensor.name].fields:
            columns.append(rng.integers(0, field.size, size=(PARITY_ROWS, field.slots)))
        feeds[tensor.name] = np.concatenate(columns, axis=1).astype(np.int64)
    return feeds
