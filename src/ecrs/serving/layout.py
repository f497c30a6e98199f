"""Names and version folders of the served Triton model repository.

This module imports nothing heavy, so the served Python models can use it
without loading Paddle or onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

from ecrs.errors import ExportError

USER_TOWER = "user_tower"
ITEM_TOWER = "item_tower"
DEEPFM_RANK = "deepfm_rank"
RECOMMEND = "recommend_ensemble"
USER_LOOKUP = "user_lookup"
ITEM_LOOKUP = "item_lookup"
RECALL_CANDIDATES = "recall_candidates"
RANK_ITEMS = "rank_items"
ONNX_MODELS = (USER_TOWER, ITEM_TOWER, DEEPFM_RANK)
# The Python-backend models; each calls the ONNX models through BLS.
PYTHON_MODELS = (RECOMMEND, USER_LOOKUP, ITEM_LOOKUP, RECALL_CANDIDATES, RANK_ITEMS)
CONFIG_FILE = "config.pbtxt"
ONNX_FILE = "model.onnx"


def list_versions(served: Path, model: str) -> list[int]:
    """Return the numbered version folders of ``model`` that hold a model.onnx."""
    folder = Path(served) / model
    if not folder.is_dir():
        return []
    return sorted(
        int(entry.name)
        for entry in folder.iterdir()
        if entry.name.isdigit() and (entry / ONNX_FILE).exists()
    )


def latest_version(served: Path) -> int:
    """Return the newest version that every ONNX model has."""
    common = set(list_versions(served, USER_TOWER))
    for model in ONNX_MODELS[1:]:
        common &= set(list_versions(served, model))
    if not common:
        raise ExportError(f"no exported version in {served}; run 'ecrs export' first")
    return max(common)


def next_version(served: Path) -> int:
    return max(list_versions(served, USER_TOWER), default=0) + 1
