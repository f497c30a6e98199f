"""Train the DeepFM ranker on positives against sampled negatives.

Negatives come from three sources. Hard negatives are drawn from the items
the trained two-tower model recalls for the user (its candidates, minus the
user's training items), which is the choice the ranker faces when serving.
The rest are drawn half uniformly from the catalogue and half in proportion
to item popularity, so the ranker cannot score well by preferring popular
items alone. A sampled negative may by chance be an item the user
interacted with; at the default ratio that noise is small.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import paddle.nn.functional as F

from ecrs.models.deepfm import DeepFM, DeepFMConfig
from ecrs.paddle_runtime import paddle
from ecrs.training.data import EncodedData
from ecrs.training.loop import adam, apply_gradients, log_epoch


@dataclass(frozen=True, kw_only=True)
class DeepFMTraining:
    """Hyperparameters of DeepFM and its training.

    ``negatives`` is the number of sampled negatives per positive pair, and
    ``hard_negative_share`` the share of them drawn from recall candidates
    when candidates are given to ``train_deepfm``. ``new_user_share`` is the
    share of examples whose user row reads as a new user's (unknown id, no
    history), so the ranker learns to score for new users too.
    """

    embedding_dim: int = 16
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = 0.1
    epochs: int = 4
    batch_size: int = 2048
    learning_rate: float = 0.002
    negatives: int = 4
    hard_negative_share: float = 0.5
    new_user_share: float = 0.1
    weight_decay: float = 1e-6
    seed: int = 0


def build_deepfm(data: EncodedData, params: DeepFMTraining) -> DeepFM:
    users, items = data.encoder.users, data.encoder.items
    return DeepFM(
        DeepFMConfig(
            user_field_sizes=tuple(users.field_sizes),
            user_field_slots=tuple(users.field_slots),
            item_field_sizes=tuple(items.field_sizes),
            item_field_slots=tuple(items.field_slots),
            embedding_dim=params.embedding_dim,
            hidden=params.hidden,
            dropout=params.dropout,
        )
    )


def sample_negatives(
    item_counts: np.ndarray, size: int, rng: np.random.Generator
) -> np.ndarray:
    """Draw item positions: half uniformly, half in proportion to popularity."""
    uniform = rng.integers(0, len(item_counts), size=size)
    popularity = item_counts.astype(np.float64) + 1.0
    popular = rng.choice(len(item_counts), size=size, p=popularity / popularity.sum())
    return np.where(rng.random(size) < 0.5, uniform, popular)


def train_deepfm(
    data: EncodedData,
    params: DeepFMTraining,
    candidates: np.ndarray | None = None,
    curve: list[float] | None = None,
) -> DeepFM:
    """Train DeepFM; ``candidates`` ``[users, k]`` holds item positions recalled
    for each user position, the source of hard negatives (none when absent).

    Each epoch's mean loss is appended to ``curve`` when one is given.
    """
    paddle.seed(params.seed)
    rng = np.random.default_rng(params.seed)
    model = build_deepfm(data, params)
    optimizer = adam(model, params.learning_rate, params.weight_decay)
    counts = data.item_counts
    model.train()
    for epoch in range(1, params.epochs + 1):
        started = time.perf_counter()
        pairs, items, labels = _epoch_examples(data, counts, params, candidates, rng)
        losses = []
        for start in range(0, len(labels), params.batch_size):
            window = slice(start, start + params.batch_size)
            user_rows = data.as_new_users(
                data.pair_user_rows(pairs[window]), params.new_user_share, rng
            )
            logits = model.logits(
                paddle.to_tensor(user_rows),
                paddle.to_tensor(data.item_rows[items[window]]),
            )
            loss = F.binary_cross_entropy_with_logits(
                logits, paddle.to_tensor(labels[window]).unsqueeze(-1)
            )
            losses.append(apply_gradients(optimizer, loss))
        loss = log_epoch("deepfm", epoch, params.epochs, losses, len(labels), started)
        if curve is not None:
            curve.append(loss)
    model.eval()
    return model


def _epoch_examples(
    data: EncodedData,
    counts: np.ndarray,
    params: DeepFMTraining,
    candidates: np.ndarray | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle the positives with freshly sampled negatives for one epoch.

    Returns (pair index, item position, label) arrays: each negative shares
    the pair index, and so the user and history, of the positive it was
    drawn for.
    """
    negatives = params.negatives
    positives = len(data.pairs)
    negative_pairs = np.repeat(np.arange(positives), negatives)
    negative_items = sample_negatives(counts, positives * negatives, rng)
    if candidates is not None and candidates.shape[1] > 0:
        hard = rng.random(len(negative_pairs)) < params.hard_negative_share
        picks = rng.integers(0, candidates.shape[1], size=int(hard.sum()))
        hard_users = data.pairs[negative_pairs[hard], 0]
        negative_items[hard] = candidates[hard_users, picks]
    pairs = np.concatenate([np.arange(positives), negative_pairs])
    items = np.concatenate([data.pairs[:, 1], negative_items])
    labels = np.concatenate(
        [np.ones(positives, np.float32), np.zeros(positives * negatives, np.float32)]
    )
    order = rng.permutation(len(labels))
    return pairs[order], items[order], labels[order]


def score_pairs(
    model: DeepFM, user_rows: np.ndarray, item_rows: np.ndarray, batch_size: int = 8192
) -> np.ndarray:
    """Score aligned rows of user and item ids; returns probabilities ``[n]``."""
    model.eval()
    scores = []
    with paddle.no_grad():
        for start in range(0, len(user_rows), batch_size):
            window = slice(start, start + batch_size)
            output = model(
                paddle.to_tensor(user_rows[window]), paddle.to_tensor(item_rows[window])
            )
            scores.append(output.numpy()[:, 0])
    return np.concatenate(scores) if scores else np.zeros(0, np.float32)
