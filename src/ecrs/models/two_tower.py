"""The two-tower recall model: a user tower and an item tower.

Each tower embeds its fields (the id first, then the features), runs an MLP
and L2-normalizes the result, so the inner product of a user vector and an
item vector is their cosine similarity. Milvus searches the item vectors with
the inner-product metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import paddle.nn.functional as F
from paddle import nn

from ecrs.models.layers import FieldEmbedding, mlp
from ecrs.paddle_runtime import paddle


@dataclass(frozen=True, kw_only=True)
class TowerConfig:
    """Layer sizes of one tower. ``output_dim`` is the vector dimension."""

    field_sizes: tuple[int, ...]
    field_slots: tuple[int, ...]
    embedding_dim: int = 32
    hidden: tuple[int, ...] = (256,)
    output_dim: int = 64


class Tower(nn.Layer):
    """Map an id row ``[batch, slots]`` to a unit vector ``[batch, output_dim]``."""

    def __init__(self, config: TowerConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = FieldEmbedding(
            config.field_sizes, config.field_slots, config.embedding_dim
        )
        width = len(config.field_sizes) * config.embedding_dim
        self.mlp = mlp(width, config.hidden, config.output_dim)

    def forward(self, ids: paddle.Tensor) -> paddle.Tensor:
        fields = self.embedding(ids)
        return F.normalize(self.mlp(fields.flatten(start_axis=1)), axis=-1)


class TwoTower(nn.Layer):
    """The user and item towers trained together.

    ``temperature`` divides the similarities into the logits of training's
    softmax; serving uses it to put the recall score on the ranker's scale.
    """

    def __init__(
        self, user: TowerConfig, item: TowerConfig, temperature: float = 0.05
    ) -> None:
        super().__init__()
        self.temperature = temperature
        if user.output_dim != item.output_dim:
            raise ValueError(
                f"user tower output_dim {user.output_dim} differs from item tower "
                f"output_dim {item.output_dim}; the vectors must have one dimension"
            )
        self.user_tower = Tower(user)
        self.item_tower = Tower(item)

    def forward(
        self, user_ids: paddle.Tensor, item_ids: paddle.Tensor
    ) -> tuple[paddle.Tensor, paddle.Tensor]:
        return self.user_tower(user_ids), self.item_tower(item_ids)


def tower_config(
    field_sizes: Sequence[int],
    field_slots: Sequence[int],
    *,
    embedding_dim: int,
    hidden: Sequence[int],
    output_dim: int,
) -> TowerConfig:
    return TowerConfig(
        field_sizes=tuple(field_sizes),
        field_slots=tuple(field_slots),
        embedding_dim=embedding_dim,
        hidden=tuple(hidden),
        output_dim=output_dim,
    )
