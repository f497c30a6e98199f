"""DeepFM: a factorization machine and an MLP over shared field embeddings.

The ranker scores (user, item) pairs. Its inputs are the same id rows the
towers read: the user row ``[batch, user_slots]`` and the item row
``[batch, item_slots]``. The output is a click probability ``[batch, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import paddle.nn.functional as F
from paddle import nn

from ecrs.models.layers import FieldEmbedding, mlp
from ecrs.paddle_runtime import paddle


@dataclass(frozen=True, kw_only=True)
class DeepFMConfig:
    user_field_sizes: tuple[int, ...]
    user_field_slots: tuple[int, ...]
    item_field_sizes: tuple[int, ...]
    item_field_slots: tuple[int, ...]
    embedding_dim: int = 16
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = 0.1


class DeepFM(nn.Layer):
    def __init__(self, config: DeepFMConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embedding_dim
        self.user_embedding = FieldEmbedding(
            config.user_field_sizes, config.user_field_slots, dim
        )
        self.item_embedding = FieldEmbedding(
            config.item_field_sizes, config.item_field_slots, dim
        )
        # First-order (linear) weights: a one-dimensional embedding per value.
        self.user_linear = FieldEmbedding(
            config.user_field_sizes, config.user_field_slots, 1
        )
        self.item_linear = FieldEmbedding(
            config.item_field_sizes, config.item_field_slots, 1
        )
        self.bias = self.create_parameter(
            [1], default_initializer=nn.initializer.Constant(0.0)
        )
        fields = len(config.user_field_sizes) + len(config.item_field_sizes)
        self.dropout = nn.Dropout(config.dropout)
        self.dnn = mlp(fields * dim, config.hidden, 1)

    def logits(self, user_ids: paddle.Tensor, item_ids: paddle.Tensor) -> paddle.Tensor:
        vectors = paddle.concat(
            [self.user_embedding(user_ids), self.item_embedding(item_ids)], axis=1
        )
        first_order = (
            self.user_linear(user_ids).sum(axis=[1, 2])
            + self.item_linear(item_ids).sum(axis=[1, 2])
        ).unsqueeze(-1)
        summed = vectors.sum(axis=1)
        second_order = 0.5 * (summed * summed - (vectors * vectors).sum(axis=1))
        fm = second_order.sum(axis=1, keepdim=True)
        deep = self.dnn(self.dropout(vectors.flatten(start_axis=1)))
        return first_order + fm + deep + self.bias

    def forward(
        self, user_ids: paddle.Tensor, item_ids: paddle.Tensor
    ) -> paddle.Tensor:
        return F.sigmoid(self.logits(user_ids, item_ids))
