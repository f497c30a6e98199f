"""Save and load a trained checkpoint: the encoder and both models.

A checkpoint folder holds ``encoder.json``, each model's weights
(``two_tower.pdparams``, ``deepfm.pdparams``) beside a JSON file of its layer
sizes, and ``metrics.json`` with the validation metrics of the training run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ecrs.errors import DataError
from ecrs.features.encoder import FeatureEncoder
from ecrs.models.deepfm import DeepFM, DeepFMConfig
from ecrs.models.two_tower import TowerConfig, TwoTower
from ecrs.paddle_runtime import paddle
from ecrs.serving.scoring import Scoring

TWO_TOWER = "two_tower"
DEEPFM = "deepfm"


@dataclass
class Checkpoint:
    encoder: FeatureEncoder
    two_tower: TwoTower
    deepfm: DeepFM
    metrics: dict[str, Any] = field(default_factory=dict)

    def scoring(self) -> Scoring:
        """Return the served ranking score, whose recall logit is similarity / temperature."""
        return Scoring(recall_weight=1.0 / self.two_tower.temperature)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.encoder.save(folder)
        tower_sizes = {
            "user": asdict(self.two_tower.user_tower.config),
            "item": asdict(self.two_tower.item_tower.config),
            "temperature": self.two_tower.temperature,
        }
        _write_json(folder / f"{TWO_TOWER}.json", tower_sizes)
        paddle.save(self.two_tower.state_dict(), str(folder / f"{TWO_TOWER}.pdparams"))
        _write_json(folder / f"{DEEPFM}.json", asdict(self.deepfm.config))
        paddle.save(self.deepfm.state_dict(), str(folder / f"{DEEPFM}.pdparams"))
        _write_json(folder / "metrics.json", self.metrics)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Checkpoint:
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(
                f"checkpoint folder {folder} does not exist; check the path, or "
                "write one with 'ecrs train'"
            )
        if not (folder / f"{TWO_TOWER}.pdparams").exists():
            raise DataError(
                f"{folder} is not a checkpoint (no {TWO_TOWER}.pdparams); "
                "run 'ecrs train' to write one"
            )
        encoder = FeatureEncoder.load(folder)
        sizes = _read_json(folder / f"{TWO_TOWER}.json")
        two_tower = TwoTower(
            _tower_config(sizes["user"]),
            _tower_config(sizes["item"]),
            **({"temperature": sizes["temperature"]} if "temperature" in sizes else {}),
        )
        two_tower.set_state_dict(_load_weights(folder / f"{TWO_TOWER}.pdparams"))
        deepfm = DeepFM(_deepfm_config(_read_json(folder / f"{DEEPFM}.json")))
        deepfm.set_state_dict(_load_weights(folder / f"{DEEPFM}.pdparams"))
        two_tower.eval()
        deepfm.eval()
        metrics_path = folder / "metrics.json"
        metrics = _read_json(metrics_path) if metrics_path.exists() else {}
        return cls(encoder, two_tower, deepfm, metrics)


def _tower_config(raw: dict[str, Any]) -> TowerConfig:
    return TowerConfig(**{key: _tuples(value) for key, value in raw.items()})


def _deepfm_config(raw: dict[str, Any]) -> DeepFMConfig:
    return DeepFMConfig(**{key: _tuples(value) for key, value in raw.items()})


def _tuples(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _load_weights(path: Path) -> dict:
    """Read a ``.pdparams`` file; a damaged or truncated one raises DataError."""
    try:
        return paddle.load(str(path))
    except Exception as exc:  # paddle 3.3 raises ValueError for a truncated file
        raise DataError(
            f"checkpoint file {path} cannot be read ({exc}); write the checkpoint "
            "again with 'ecrs train'"
        ) from exc
