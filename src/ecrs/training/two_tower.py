"""Train the two-tower model with in-batch negatives.

Each batch of positive (user, item) pairs is scored all against all; the
other items of the batch are the negatives of each user. Popular items show up
as in-batch negatives more often than rare ones, so their logits are corrected
by the log of their sampling probability (logQ correction). A duplicate of the
positive item elsewhere in the batch is masked out instead of counted as a
negative.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import paddle.nn.functional as F

from ecrs.features.encoder import OOV_ID
from ecrs.models.two_tower import TwoTower, tower_config
from ecrs.paddle_runtime import paddle
from ecrs.training.data import EncodedData
from ecrs.training.loop import adam, apply_gradients, log_epoch


@dataclass(frozen=True, kw_only=True)
class TwoTowerTraining:
    """Hyperparameters of the two-tower model and its training.

    ``id_dropout`` is the share of training rows whose user and item ids are
    replaced by the out-of-vocabulary id, which teaches that id to stand for
    users and items never seen in training. ``new_user_share`` is the share
    of rows whose user also loses the history, as a new user arrives.
    """

    output_dim: int = 64
    embedding_dim: int = 32
    hidden: tuple[int, ...] = (256,)
    epochs: int = 10
    batch_size: int = 1024
    learning_rate: float = 0.003
    temperature: float = 0.05
    id_dropout: float = 0.1
    new_user_share: float = 0.1
    weight_decay: float = 1e-6
    seed: int = 0


def build_two_tower(data: EncodedData, params: TwoTowerTraining) -> TwoTower:
    sizes = {
        "embedding_dim": params.embedding_dim,
        "hidden": params.hidden,
        "output_dim": params.output_dim,
    }
    users, items = data.encoder.users, data.encoder.items
    return TwoTower(
        tower_config(users.field_sizes, users.field_slots, **sizes),
        tower_config(items.field_sizes, items.field_slots, **sizes),
        temperature=params.temperature,
    )


def train_two_tower(
    data: EncodedData, params: TwoTowerTraining, curve: list[float] | None = None
) -> TwoTower:
    """Train a two-tower model on the positive pairs of ``data``.

    Each epoch's mean loss is appended to ``curve`` when one is given.
    """
    paddle.seed(params.seed)
    rng = np.random.default_rng(params.seed)
    model = build_two_tower(data, params)
    optimizer = adam(model, params.learning_rate, params.weight_decay)
    counts = data.item_counts.astype(np.float64)
    log_q = np.log(np.maximum(counts, 1.0) / counts.sum()).astype(np.float32)
    model.train()
    for epoch in range(1, params.epochs + 1):
        started = time.perf_counter()
        order = rng.permutation(len(data.pairs))
        losses = []
        for start in range(0, len(order), params.batch_size):
            batch = order[start : start + params.batch_size]
            if len(batch) < 2:
                continue
            loss = _batch_loss(model, data, batch, log_q, params, rng)
            losses.append(apply_gradients(optimizer, loss))
        loss = log_epoch("two-tower", epoch, params.epochs, losses, len(order), started)
        if curve is not None:
            curve.append(loss)
    model.eval()
    return model


def _batch_loss(
    model: TwoTower,
    data: EncodedData,
    batch: np.ndarray,
    log_q: np.ndarray,
    params: TwoTowerTraining,
    rng: np.random.Generator,
) -> paddle.Tensor:
    """In-batch softmax loss of the pairs at positions ``batch`` of ``data.pairs``."""
    users = data.pair_user_rows(batch)
    item_positions = data.pairs[batch, 1]
    items = data.item_rows[item_positions].copy()
    users[rng.random(len(batch)) < params.id_dropout, 0] = OOV_ID
    data.as_new_users(users, params.new_user_share, rng)
    items[rng.random(len(batch)) < params.id_dropout, 0] = OOV_ID
    user_vectors, item_vectors = model(paddle.to_tensor(users), paddle.to_tensor(items))
    logits = paddle.matmul(user_vectors, item_vectors, transpose_y=True)
    logits = logits / params.temperature - paddle.to_tensor(log_q[item_positions])
    same_item = item_positions[:, None] == item_positions[None, :]
    np.fill_diagonal(same_item, False)
    logits = logits - paddle.to_tensor(same_item.astype(np.float32) * 1e9)
    labels = paddle.arange(len(batch), dtype="int64")
    return F.cross_entropy(logits, labels)


def item_vectors(
    model: TwoTower, item_rows: np.ndarray, batch_size: int = 4096
) -> np.ndarray:
    """Compute the item tower's vectors for many id rows, in batches."""
    return _tower_outputs(model.item_tower, item_rows, batch_size)


def user_vectors(
    model: TwoTower, user_rows: np.ndarray, batch_size: int = 4096
) -> np.ndarray:
    return _tower_outputs(model.user_tower, user_rows, batch_size)


def _tower_outputs(
    tower: paddle.nn.Layer, rows: np.ndarray, batch_size: int
) -> np.ndarray:
    tower.eval()
    outputs = []
    with paddle.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = paddle.to_tensor(rows[start : start + batch_size])
            outputs.append(tower(chunk).numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


def recall_candidates(
    model: TwoTower, data: EncodedData, k: int, chunk: int = 512
) -> np.ndarray:
    """Return each user's top ``k`` item positions by two-tower score,
    leaving out the user's training items; shape ``[users, k]``."""
    items = item_vectors(model, data.item_rows)
    users = user_vectors(model, data.user_rows)
    k = min(k, len(data.item_ids) - 1)
    order = np.argsort(data.pairs[:, 0], kind="stable")
    sorted_pairs = data.pairs[order]
    bounds = np.searchsorted(sorted_pairs[:, 0], np.arange(len(data.user_ids) + 1))
    result = np.zeros((len(data.user_ids), k), dtype=np.int64)
    for start in range(0, len(data.user_ids), chunk):
        scores = users[start : start + chunk] @ items.T
        for row in range(scores.shape[0]):
            user = start + row
            scores[row, sorted_pairs[bounds[user] : bounds[user + 1], 1]] = -np.inf
        result[start : start + chunk] = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return result
