"""Building blocks shared by the two-tower model and DeepFM."""

from __future__ import annotations

from collections.abc import Sequence

from paddle import nn

from ecrs.paddle_runtime import paddle


class FieldEmbedding(nn.Layer):
    """Embed each field of an id row; average the slots of multi-valued fields.

    The input is an ``int64`` matrix ``[batch, sum(field_slots)]`` laid out as
    the feature encoder writes it. The output is ``[batch, fields, dim]``.
    Id 0 (missing, or an empty slot) embeds to zeros and does not count in an
    average, so a field with every slot empty contributes a zero vector.
    """

    def __init__(
        self, field_sizes: Sequence[int], field_slots: Sequence[int], dim: int
    ) -> None:
        super().__init__()
        if len(field_sizes) != len(field_slots):
            raise ValueError(
                f"got {len(field_sizes)} field sizes but {len(field_slots)} slot counts"
            )
        self.field_slots = list(field_slots)
        self.tables = nn.LayerList(
            [nn.Embedding(size, dim, padding_idx=0) for size in field_sizes]
        )

    def forward(self, ids: paddle.Tensor) -> paddle.Tensor:
        pooled = []
        offset = 0
        for table, slots in zip(self.tables, self.field_slots):
            field_ids = ids[:, offset : offset + slots]
            vectors = table(field_ids)
            if slots == 1:
                pooled.append(vectors[:, 0, :])
            else:
                mask = (field_ids != 0).astype(vectors.dtype).unsqueeze(-1)
                count = paddle.clip(mask.sum(axis=1), min=1.0)
                pooled.append((vectors * mask).sum(axis=1) / count)
            offset += slots
        return paddle.stack(pooled, axis=1)


def mlp(input_dim: int, hidden: Sequence[int], output_dim: int) -> nn.Sequential:
    """A ReLU MLP ending in a linear layer of ``output_dim`` units."""
    layers: list[nn.Layer] = []
    width = input_dim
    for units in hidden:
        layers += [nn.Linear(width, units), nn.ReLU()]
        width = units
    layers.append(nn.Linear(width, output_dim))
    return nn.Sequential(*layers)
