"""Run one exported version's ONNX files in-process with onnxruntime.

Loading the catalogue computes item vectors this way, and tests and offline
evaluation score with it. These are the same ``model.onnx`` files Triton
serves, read from the served repository.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from ecrs.errors import ExportError
from ecrs.features.encoder import FeatureEncoder
from ecrs.serving.layout import DEEPFM_RANK, ITEM_TOWER, USER_TOWER, latest_version
from ecrs.serving.scoring import Scoring


class OnnxModels:
    """The user tower, item tower and ranker of one version, via onnxruntime."""

    def __init__(
        self, repository: Path, version: int | None = None, *, threads: int = 1
    ) -> None:
        self.repository = Path(repository)
        self.version = version or latest_version(self.repository)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self._sessions = {
            name: self._open(name, options)
            for name in (USER_TOWER, ITEM_TOWER, DEEPFM_RANK)
        }
        self.encoder = FeatureEncoder.load(self.folder(USER_TOWER))
        self.scoring = Scoring.load(self.folder(USER_TOWER))

    def folder(self, model: str) -> Path:
        return self.repository / model / str(self.version)

    def _open(self, model: str, options: ort.SessionOptions) -> ort.InferenceSession:
        path = self.folder(model) / "model.onnx"
        if not path.exists():
            raise ExportError(
                f"{path} does not exist; export version {self.version} first"
            )
        return ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )

    @property
    def dim(self) -> int:
        return int(self._sessions[ITEM_TOWER].get_outputs()[0].shape[1])

    def user_tower(self, rows: np.ndarray) -> np.ndarray:
        return self._sessions[USER_TOWER].run(None, {"USER_FEATURE_IDS": rows})[0]

    def item_tower(self, rows: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        session = self._sessions[ITEM_TOWER]
        outputs = [
            session.run(None, {"ITEM_FEATURE_IDS": rows[start : start + batch_size]})[0]
            for start in range(0, len(rows), batch_size)
        ]
        return (
            np.concatenate(outputs) if outputs else np.zeros((0, self.dim), np.float32)
        )

    def rank(self, user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        feeds = {"USER_FEATURE_IDS": user_rows, "ITEM_FEATURE_IDS": item_rows}
        return self._sessions[DEEPFM_RANK].run(None, feeds)[0][:, 0]
